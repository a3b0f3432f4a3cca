/**
 * Dropping repeated deliveries: the worker delivers at least once, so after a timeout the same message (same
 * webhook-id) or the same event inside a re-formed batch can arrive again. What was seen lives in a small log of
 * key -> first-seen time (milliseconds), kept in the workflow's static data, bounded in size.
 */

export type SeenLog = Record<string, number>;

// ~50 bytes an entry: the log stays a few tens of KB in the workflow's static data, which n8n saves with the workflow.
export const MAX_SEEN_ENTRIES = 1000;

export interface DedupeResult<T> {
	fresh: T[];
	duplicates: number;
	seen: SeenLog;
}

/**
 * The items not seen within `windowMs` before `now`, and the log with them (and the message) recorded. A message
 * whose id was seen is a duplicate as a whole. The log given is not changed; entries older than the window go, and
 * past `maxEntries` the oldest go first.
 */
export function dropDuplicates<T>(
	items: T[],
	keys: string[],
	messageId: string,
	seen: SeenLog,
	now: number,
	windowMs: number,
	maxEntries: number = MAX_SEEN_ENTRIES,
): DedupeResult<T> {
	const log = recentEntries(seen, now, windowMs);
	if (messageId in log) {
		return { fresh: [], duplicates: items.length, seen: log };
	}
	const fresh: T[] = [];
	items.forEach((item, index) => {
		const key = keys[index];
		if (key in log) return;
		log[key] = now;
		fresh.push(item);
	});
	log[messageId] = now;
	return { fresh, duplicates: items.length - fresh.length, seen: bounded(log, maxEntries) };
}

function recentEntries(seen: SeenLog, now: number, windowMs: number): SeenLog {
	const recent: SeenLog = Object.create(null);
	for (const [key, at] of Object.entries(seen ?? {})) {
		// A time in the future (a clock stepped back) counts as recent: forgetting early would let a repeat through.
		if (typeof at === 'number' && now - at < windowMs) recent[key] = at;
	}
	return recent;
}

function bounded(log: SeenLog, maxEntries: number): SeenLog {
	const entries = Object.entries(log);
	if (entries.length <= maxEntries) return { ...log };
	entries.sort((a, b) => b[1] - a[1]);
	return Object.fromEntries(entries.slice(0, maxEntries));
}
