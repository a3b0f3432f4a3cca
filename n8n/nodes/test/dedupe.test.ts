import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { dropDuplicates } from '../nodes/shared/dedupe';

const MINUTE = 60_000;
const T0 = Date.UTC(2026, 1, 21, 9, 30);

describe('dropDuplicates', () => {
	test('keeps everything the first time and remembers the message and its events', () => {
		const result = dropDuplicates(['a', 'b'], ['evt_a', 'evt_b'], 'bat_1', {}, T0, 60 * MINUTE);
		assert.deepEqual(result.fresh, ['a', 'b']);
		assert.equal(result.duplicates, 0);
		assert.deepEqual(result.seen, { evt_a: T0, evt_b: T0, bat_1: T0 });
	});

	test('drops a repeated webhook-id within the window as a whole', () => {
		const first = dropDuplicates(['a'], ['evt_a'], 'evt_a', {}, T0, 60 * MINUTE);
		const again = dropDuplicates(['a'], ['evt_a'], 'evt_a', first.seen, T0 + 59 * MINUTE, 60 * MINUTE);
		assert.deepEqual(again.fresh, []);
		assert.equal(again.duplicates, 1);
	});

	test('drops a repeated webhook-id even when its events carry keys not seen yet', () => {
		const first = dropDuplicates(['a'], ['bat_1#0'], 'bat_1', {}, T0, 60 * MINUTE);
		const again = dropDuplicates(['a'], ['evt_new'], 'bat_1', first.seen, T0 + MINUTE, 60 * MINUTE);
		assert.deepEqual([again.fresh, again.duplicates], [[], 1]);
	});

	test('lets the same webhook-id through once the window has passed', () => {
		const first = dropDuplicates(['a'], ['evt_a'], 'evt_a', {}, T0, 60 * MINUTE);
		const later = dropDuplicates(['a'], ['evt_a'], 'evt_a', first.seen, T0 + 60 * MINUTE, 60 * MINUTE);
		assert.deepEqual(later.fresh, ['a']);
	});

	test('drops events already seen inside a re-formed batch, keeps the new ones', () => {
		const first = dropDuplicates(['a', 'b'], ['evt_a', 'evt_b'], 'bat_1', {}, T0, 60 * MINUTE);
		const second = dropDuplicates(['b', 'c'], ['evt_b', 'evt_c'], 'bat_2', first.seen, T0 + MINUTE, 60 * MINUTE);
		assert.deepEqual(second.fresh, ['c']);
		assert.equal(second.duplicates, 1);
	});

	test('drops an event repeated within one batch', () => {
		const result = dropDuplicates(['a', 'a2'], ['evt_a', 'evt_a'], 'bat_1', {}, T0, 60 * MINUTE);
		assert.deepEqual(result.fresh, ['a']);
	});

	test('forgets entries older than the window', () => {
		const result = dropDuplicates(['x'], ['evt_x'], 'evt_x', { old: T0 - 61 * MINUTE, recent: T0 - MINUTE }, T0, 60 * MINUTE);
		assert.deepEqual(Object.keys(result.seen).sort(), ['evt_x', 'recent']);
	});

	test('keeps at most maxEntries, the most recent first', () => {
		let seen = {};
		for (let i = 0; i < 10; i++) {
			seen = dropDuplicates([i], [`evt_${i}`], `evt_${i}`, seen, T0 + i, 60 * MINUTE, 4).seen;
		}
		assert.deepEqual(Object.keys(seen).sort(), ['evt_6', 'evt_7', 'evt_8', 'evt_9']);
	});

	test('does not change the log it is given', () => {
		const seen = { evt_a: T0 };
		dropDuplicates(['b'], ['evt_b'], 'evt_b', seen, T0, 60 * MINUTE);
		assert.deepEqual(seen, { evt_a: T0 });
	});
});
