import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { rawBodyOf, receive } from '../nodes/shared/delivery';
import { batchBody, compact, sampleEvent } from './support/samples';
import { newSecret, signedHeaders } from './support/signing';

const SECRET = newSecret();
const MINUTE = 60_000;

describe('rawBodyOf', () => {
	test("takes n8n's rawBody Buffer as it is", async () => {
		const raw = Buffer.from('{"id": "evt_1",   "spaced": true}');
		assert.equal(await rawBodyOf({ rawBody: raw, body: { id: 'evt_1', spaced: true } }), raw);
	});

	test('asks n8n to read the raw body when it has not yet', async () => {
		const request: { rawBody?: Buffer; readRawBody: () => Promise<void> } = {
			readRawBody: async () => {
				request.rawBody = Buffer.from('{"id":"evt_1"}');
			},
		};
		assert.equal(String(await rawBodyOf(request)), '{"id":"evt_1"}');
	});

	test('serialises the parsed body only when there is no raw body at all', async () => {
		assert.equal(await rawBodyOf({ body: { id: 'evt_1', n: 1 } }), '{"id":"evt_1","n":1}');
	});
});

describe('receive', () => {
	test('a signed single event gives that one event', () => {
		const event = sampleEvent('evt_1');
		const body = compact(event);
		const receipt = receive(SECRET, Buffer.from(body), signedHeaders(SECRET, 'evt_1', body));
		assert.deepEqual(receipt, { accepted: true, messageId: 'evt_1', events: [event], duplicates: 0 });
	});

	test('a signed batch gives one event per entry', () => {
		const events = [sampleEvent('evt_1'), sampleEvent('evt_2')];
		const body = batchBody(events);
		const receipt = receive(SECRET, body, signedHeaders(SECRET, 'bat_1', body));
		assert.equal(receipt.accepted, true);
		assert.deepEqual(receipt.accepted && receipt.events, events);
	});

	test('the events are read from the signed bytes, not from a body parsed elsewhere', () => {
		const body = '{"id": "evt_1", "campaign": "welcome"}';
		const receipt = receive(SECRET, body, signedHeaders(SECRET, 'evt_1', body));
		assert.deepEqual(receipt.accepted && receipt.events, [{ id: 'evt_1', campaign: 'welcome' }]);
	});

	test('a bad signature is a 401 with no events', () => {
		const body = compact(sampleEvent('evt_1'));
		const receipt = receive(SECRET, body, signedHeaders(newSecret(), 'evt_1', body));
		assert.deepEqual(receipt, { accepted: false, status: 401, reason: 'webhook-signature does not match the body' });
	});

	test('a signed body that is not events is a 400', () => {
		const body = '[1,2,3]';
		const receipt = receive(SECRET, body, signedHeaders(SECRET, 'evt_1', body));
		assert.equal(!receipt.accepted && receipt.status, 400);
	});

	test('a signed body that is not JSON is a 400', () => {
		const body = 'not json';
		const receipt = receive(SECRET, body, signedHeaders(SECRET, 'evt_1', body));
		assert.deepEqual(receipt, { accepted: false, status: 400, reason: 'the body is not JSON' });
	});

	test('with a window, a repeated delivery gives no events and the log to keep', () => {
		const body = compact(sampleEvent('evt_1'));
		const headers = signedHeaders(SECRET, 'evt_1', body);
		const first = receive(SECRET, body, headers, { seen: {}, now: 1_000, windowMs: 60 * MINUTE });
		assert.ok(first.accepted && first.seen);
		const again = receive(SECRET, body, headers, { seen: first.seen, now: 2_000, windowMs: 60 * MINUTE });
		assert.deepEqual(again.accepted && [again.events, again.duplicates], [[], 1]);
	});
});
