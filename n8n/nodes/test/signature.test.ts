import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { signatureHeaders, verifyDelivery } from '../nodes/shared/signature';
import { compact, sampleEvent } from './support/samples';
import { newSecret, nowSeconds, sign, signedHeaders } from './support/signing';

const SECRET = newSecret();
const BODY = compact(sampleEvent('evt_1'));

describe('verifyDelivery', () => {
	test('accepts a body signed with the subscription secret', () => {
		const result = verifyDelivery(SECRET, BODY, signedHeaders(SECRET, 'evt_1', BODY));
		assert.deepEqual(result, { valid: true, messageId: 'evt_1', payload: BODY });
	});

	test('accepts the raw bytes of a UTF-8 body as a Buffer', () => {
		const raw = Buffer.from(compact(sampleEvent('evt_2', 'vip', 'Zoë Ångström 名前')), 'utf8');
		const result = verifyDelivery(SECRET, raw, signedHeaders(SECRET, 'evt_2', raw));
		assert.equal(result.valid, true);
	});

	test('accepts when any of several signatures matches (secret rotation)', () => {
		const headers = signedHeaders(SECRET, 'evt_1', BODY);
		headers['webhook-signature'] = `${sign(newSecret(), 'evt_1', nowSeconds(), BODY)} ${headers['webhook-signature']}`;
		assert.equal(verifyDelivery(SECRET, BODY, headers).valid, true);
	});

	test('refuses a body signed with another secret', () => {
		const result = verifyDelivery(SECRET, BODY, signedHeaders(newSecret(), 'evt_1', BODY));
		assert.deepEqual(result, { valid: false, reason: 'webhook-signature does not match the body' });
	});

	test('refuses a body changed after signing', () => {
		const headers = signedHeaders(SECRET, 'evt_1', BODY);
		const tampered = BODY.replace('"New"', '"VIP"');
		assert.notEqual(tampered, BODY);
		assert.equal(verifyDelivery(SECRET, tampered, headers).valid, false);
	});

	test('refuses a signature moved to another webhook-id', () => {
		const headers = { ...signedHeaders(SECRET, 'evt_1', BODY), 'webhook-id': 'evt_other' };
		assert.equal(verifyDelivery(SECRET, BODY, headers).valid, false);
	});

	test('refuses a timestamp more than 5 minutes old, even with a good signature', () => {
		const result = verifyDelivery(SECRET, BODY, signedHeaders(SECRET, 'evt_1', BODY, nowSeconds() - 10 * 60));
		assert.deepEqual(result, { valid: false, reason: 'webhook-timestamp is more than 5 minutes old' });
	});

	test('refuses a timestamp more than 5 minutes ahead', () => {
		const result = verifyDelivery(SECRET, BODY, signedHeaders(SECRET, 'evt_1', BODY, nowSeconds() + 10 * 60));
		assert.deepEqual(result, { valid: false, reason: 'webhook-timestamp is more than 5 minutes ahead' });
	});

	test('accepts a timestamp a minute old', () => {
		assert.equal(verifyDelivery(SECRET, BODY, signedHeaders(SECRET, 'evt_1', BODY, nowSeconds() - 60)).valid, true);
	});

	test('refuses a delivery without signature headers', () => {
		const result = verifyDelivery(SECRET, BODY, { 'content-type': 'application/json' });
		assert.deepEqual(result, {
			valid: false,
			reason: 'missing webhook-id, webhook-timestamp or webhook-signature header',
		});
	});

	test('refuses everything while no secret is stored', () => {
		const result = verifyDelivery(undefined, BODY, signedHeaders(SECRET, 'evt_1', BODY));
		assert.equal(result.valid, false);
	});

	test('uses a secret without the whsec_ prefix as its UTF-8 bytes, as the worker does', () => {
		const plain = 'a plain shared secret';
		assert.equal(verifyDelivery(plain, BODY, signedHeaders(plain, 'evt_1', BODY)).valid, true);
		assert.equal(verifyDelivery(plain, BODY, signedHeaders(SECRET, 'evt_1', BODY)).valid, false);
	});
});

describe('signatureHeaders', () => {
	test('takes the three headers in any case and the first of a repeated one', () => {
		assert.deepEqual(
			signatureHeaders({ 'Webhook-Id': 'evt_1', 'WEBHOOK-TIMESTAMP': ['1', '2'], 'webhook-signature': 'v1,x', other: 'y' }),
			{ 'webhook-id': 'evt_1', 'webhook-timestamp': '1', 'webhook-signature': 'v1,x' },
		);
	});
});
