/**
 * Walking a list endpoint's pages ({data, count, total, nextCursor}) until the list ends or enough rows are in.
 */

export interface Page<T> {
	data: T[];
	nextCursor?: string | null;
}

export type PageFetcher<T> = (cursor: string | undefined, pageSize: number) => Promise<Page<T>>;

export class PaginationError extends Error {}

/**
 * Every row (`limit` undefined) or the first `limit` rows. A page may hold fewer rows than asked while more
 * follow (the customer list leaves out rows whose stored segment went stale), so only a missing nextCursor ends
 * the list, never a short page.
 */
export async function collectPages<T>(fetchPage: PageFetcher<T>, maxPageSize: number, limit?: number): Promise<T[]> {
	const rows: T[] = [];
	const seenCursors = new Set<string>();
	let cursor: string | undefined;
	while (limit === undefined || rows.length < limit) {
		const pageSize = limit === undefined ? maxPageSize : Math.min(maxPageSize, limit - rows.length);
		const page = await fetchPage(cursor, pageSize);
		if (!page || !Array.isArray(page.data)) {
			throw new PaginationError('a page of the list has no "data" array');
		}
		rows.push(...page.data);
		const next = page.nextCursor;
		if (next === undefined || next === null || next === '') break;
		if (seenCursors.has(next)) {
			throw new PaginationError(`the list handed out the cursor '${next}' twice; stopping rather than looping`);
		}
		seenCursors.add(next);
		cursor = next;
	}
	return limit === undefined ? rows : rows.slice(0, limit);
}
