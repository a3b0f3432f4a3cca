/**
 * The events in a delivery's body: a batch arrives as `{"events": [...]}`, a single event is the body itself.
 */

/** One segment event as the worker sends it (id, type, campaign, occurredAt, transition, customer, ...). */
export type SegmentEvent = Record<string, unknown>;

export class EventShapeError extends Error {}

export function isObject(value: unknown): value is Record<string, unknown> {
	return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The events in `body`, in the order sent; an EventShapeError when the body is neither shape. */
export function splitEvents(body: unknown): SegmentEvent[] {
	if (!isObject(body)) {
		throw new EventShapeError('the body is not a JSON object: expected one event or {"events": [...]}');
	}
	if (!('events' in body)) {
		return [body];
	}
	const { events } = body;
	if (!Array.isArray(events)) {
		throw new EventShapeError('"events" is not a list: a batch is {"events": [...]}');
	}
	const bad = events.findIndex((event) => !isObject(event));
	if (bad !== -1) {
		throw new EventShapeError(`events[${bad}] is not a JSON object`);
	}
	return events as SegmentEvent[];
}

/** The key an event is remembered by: its own id, or its place in the message when it has none. */
export function eventKey(event: SegmentEvent, messageId: string, index: number): string {
	return typeof event.id === 'string' && event.id !== '' ? event.id : `${messageId}#${index}`;
}
