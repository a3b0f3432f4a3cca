import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
	createdSubscription,
	forget,
	remember,
	standing,
	SubscriptionAnswerError,
	type TriggerStaticData,
} from '../nodes/shared/subscription';

const URL_A = 'https://n8n.example.com/webhook/abc/webhook';
const WANTED = { url: URL_A, campaigns: ['welcome', 'vip'] };

function stored(): TriggerStaticData {
	return { subscriptionId: 'sub_1', secret: 'whsec_c2VjcmV0', url: URL_A, campaigns: ['welcome', 'vip'] };
}

function listing(entry: Record<string, unknown>) {
	return { data: [{ id: 'sub_0', url: 'https://other', campaigns: ['vip'] }, entry], count: 2 };
}

describe('standing', () => {
	test('current: listed with the same URL and campaigns (in any order)', () => {
		assert.equal(standing(stored(), listing({ id: 'sub_1', url: URL_A, campaigns: ['vip', 'welcome'] }), WANTED), 'current');
	});

	test('missing: never subscribed', () => {
		assert.equal(standing({}, listing({ id: 'sub_1' }), WANTED), 'missing');
	});

	test('missing: the stored id is no longer listed', () => {
		assert.equal(standing(stored(), { data: [], count: 0 }, WANTED), 'missing');
	});

	test('outdated: listed for other campaigns', () => {
		assert.equal(standing(stored(), listing({ id: 'sub_1', url: URL_A, campaigns: ['welcome'] }), WANTED), 'outdated');
	});

	test('outdated: the webhook URL changed', () => {
		const wanted = { ...WANTED, url: 'https://n8n.example.com/webhook/new/webhook' };
		assert.equal(standing(stored(), listing({ id: 'sub_1', url: URL_A, campaigns: WANTED.campaigns }), wanted), 'outdated');
	});

	test('current: the worker lists the URL normalised, the stored one matches', () => {
		assert.equal(
			standing(stored(), listing({ id: 'sub_1', url: `${URL_A}/`, campaigns: WANTED.campaigns }), WANTED),
			'current',
		);
	});

	test('outdated: the secret was lost here', () => {
		const data = { ...stored(), secret: undefined };
		assert.equal(standing(data, listing({ id: 'sub_1', url: URL_A, campaigns: WANTED.campaigns }), WANTED), 'outdated');
	});

	test('refuses a list answer without data', () => {
		assert.throws(() => standing(stored(), { items: [] }, WANTED), SubscriptionAnswerError);
	});
});

describe('createdSubscription', () => {
	test('takes the id and secret of the answer', () => {
		assert.deepEqual(createdSubscription({ id: 'sub_1', secret: 'whsec_x', url: URL_A, campaigns: [] }), {
			id: 'sub_1',
			secret: 'whsec_x',
		});
	});

	test('also under data', () => {
		assert.deepEqual(createdSubscription({ data: { id: 'sub_1', secret: 'whsec_x' } }), { id: 'sub_1', secret: 'whsec_x' });
	});

	test('refuses an answer without a secret', () => {
		assert.throws(() => createdSubscription({ id: 'sub_1' }), SubscriptionAnswerError);
	});
});

describe('remember and forget', () => {
	test('forget clears the subscription and keeps the dedupe log', () => {
		const data: TriggerStaticData = { seen: { evt_1: 1 } };
		remember(data, { id: 'sub_1', secret: 'whsec_x' }, WANTED);
		assert.deepEqual(data, { seen: { evt_1: 1 }, subscriptionId: 'sub_1', secret: 'whsec_x', url: URL_A, campaigns: WANTED.campaigns });
		forget(data);
		assert.deepEqual(data, { seen: { evt_1: 1 } });
	});
});
