/**
 * Receiving one delivery, without n8n: the exact bytes of the request, the signature check, the split into
 * events and the dedupe window, decided as one answer the trigger node then gives.
 */

import { dropDuplicates, type SeenLog } from './dedupe';
import { eventKey, EventShapeError, splitEvents, type SegmentEvent } from './events';
import { verifyDelivery } from './signature';

export type HeaderValues = Record<string, string | string[] | undefined>;

/** What the trigger needs of n8n's request object (an express request that n8n has read the body of). */
export interface DeliveryRequest {
	rawBody?: Buffer | string;
	readRawBody?: () => Promise<void>;
	body?: unknown;
	headers?: HeaderValues;
}

export type Receipt =
	| { accepted: false; status: 400 | 401; reason: string }
	| { accepted: true; messageId: string; events: SegmentEvent[]; duplicates: number; seen?: SeenLog };

export interface DedupeWindow {
	seen: SeenLog;
	now: number;
	windowMs: number;
}

/**
 * The bytes that were signed. n8n keeps them as `rawBody` (a Buffer) when it parses a webhook's body, and offers
 * `readRawBody()` when it has not read it yet. Only without either is the parsed body serialised again: the worker
 * sends compact JSON, which JSON.stringify reproduces for its events, so the check still holds.
 */
export async function rawBodyOf(request: DeliveryRequest): Promise<Buffer | string> {
	if (request.rawBody === undefined && typeof request.readRawBody === 'function') {
		await request.readRawBody();
	}
	if (Buffer.isBuffer(request.rawBody) || typeof request.rawBody === 'string') {
		return request.rawBody;
	}
	if (typeof request.body === 'string') return request.body;
	return JSON.stringify(request.body ?? {});
}

/**
 * 401 when the signature or timestamp fails (nothing is emitted), 400 when a signed body is not events, else the
 * events not seen within the window (all of them when `dedupe` is undefined) with the log to keep.
 */
export function receive(
	secret: string | undefined,
	rawBody: Buffer | string,
	headers: HeaderValues,
	dedupe?: DedupeWindow,
): Receipt {
	const verification = verifyDelivery(secret, rawBody, headers);
	if (!verification.valid) {
		return { accepted: false, status: 401, reason: verification.reason };
	}
	let events: SegmentEvent[];
	try {
		events = splitEvents(JSON.parse(verification.payload));
	} catch (error) {
		const reason = error instanceof EventShapeError ? error.message : 'the body is not JSON';
		return { accepted: false, status: 400, reason };
	}
	const { messageId } = verification;
	if (dedupe === undefined) {
		return { accepted: true, messageId, events, duplicates: 0 };
	}
	const keys = events.map((event, index) => eventKey(event, messageId, index));
	const result = dropDuplicates(events, keys, messageId, dedupe.seen, dedupe.now, dedupe.windowMs);
	return { accepted: true, messageId, events: result.fresh, duplicates: result.duplicates, seen: result.seen };
}
