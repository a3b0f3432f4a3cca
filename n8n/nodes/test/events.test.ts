import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { eventKey, EventShapeError, splitEvents } from '../nodes/shared/events';
import { sampleEvent } from './support/samples';

describe('splitEvents', () => {
	test('a single event is the body itself: one event', () => {
		const event = sampleEvent('evt_1');
		assert.deepEqual(splitEvents(event), [event]);
	});

	test('a batch gives its events in the order sent', () => {
		const events = [sampleEvent('evt_1'), sampleEvent('evt_2', 'vip'), sampleEvent('evt_3')];
		assert.deepEqual(splitEvents({ events }), events);
	});

	test('an empty batch gives no events', () => {
		assert.deepEqual(splitEvents({ events: [] }), []);
	});

	for (const [name, body] of [
		['a list', [sampleEvent('evt_1')]],
		['a string', 'evt_1'],
		['null', null],
		['events that is not a list', { events: {} }],
		['a batch holding a non-object', { events: [sampleEvent('evt_1'), 'x'] }],
	] as const) {
		test(`refuses ${name}`, () => {
			assert.throws(() => splitEvents(body), EventShapeError);
		});
	}
});

describe('eventKey', () => {
	test("is the event's id", () => {
		assert.equal(eventKey(sampleEvent('evt_9'), 'bat_1', 0), 'evt_9');
	});

	test('is the place in the message for an event without an id', () => {
		assert.equal(eventKey({ type: 'segment.entered' }, 'bat_1', 2), 'bat_1#2');
	});
});
