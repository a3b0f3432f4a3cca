import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';

import { SegmentWorkerTrigger } from '../nodes/SegmentWorkerTrigger/SegmentWorkerTrigger.node';
import { ADMIN_KEY, FakeWorker, READ_KEY } from './support/fakeWorker';
import { hookContext, webhookContext } from './support/fakeN8n';
import { batchBody, compact, sampleEvent } from './support/samples';
import { newSecret, nowSeconds, signedHeaders } from './support/signing';

const WEBHOOK_URL = 'https://n8n.example.com/webhook/7f1c/webhook';
const trigger = new SegmentWorkerTrigger();
const hooks = trigger.webhookMethods.default;
const worker = new FakeWorker();

before(async () => await worker.start());
after(async () => await worker.stop());
beforeEach(() => worker.reset());

function hooksFor(staticData: Record<string, unknown>, campaigns = ['welcome', 'vip'], apiKey = ADMIN_KEY) {
	return hookContext({ baseUrl: worker.url, apiKey }, { staticData, campaigns, webhookUrl: WEBHOOK_URL });
}

/** One delivery as n8n hands it to webhook(): the raw bytes kept, the body parsed. */
function delivery(secret: string, messageId: string, body: string, timestamp = nowSeconds()) {
	return { rawBody: Buffer.from(body, 'utf8'), body: JSON.parse(body), headers: signedHeaders(secret, messageId, body, timestamp) };
}

describe('webhook()', () => {
	test('answers 401 and emits nothing for a bad signature', async () => {
		const staticData = { subscriptionId: 'sub_1', secret: newSecret() };
		const body = compact(sampleEvent('evt_1'));
		const { context, response } = webhookContext({ request: delivery(newSecret(), 'evt_1', body), staticData });
		const result = await trigger.webhook.call(context);
		assert.deepEqual(result, { noWebhookResponse: true });
		assert.equal(response.status, 401);
		assert.deepEqual(JSON.parse(response.body ?? ''), { error: 'webhook-signature does not match the body' });
	});

	test('answers 401 and emits nothing for a stale timestamp', async () => {
		const secret = newSecret();
		const body = compact(sampleEvent('evt_1'));
		const request = delivery(secret, 'evt_1', body, nowSeconds() - 6 * 60);
		const { context, response } = webhookContext({ request, staticData: { secret } });
		const result = await trigger.webhook.call(context);
		assert.equal(result.workflowData, undefined);
		assert.equal(response.status, 401);
	});

	test('answers 401 for a tampered body even when the parsed body looks fine', async () => {
		const secret = newSecret();
		const body = compact(sampleEvent('evt_1'));
		const request = { ...delivery(secret, 'evt_1', body), rawBody: Buffer.from(body.replace('welcome', 'vip')) };
		const { context, response } = webhookContext({ request, staticData: { secret } });
		assert.equal((await trigger.webhook.call(context)).workflowData, undefined);
		assert.equal(response.status, 401);
	});

	test('emits a single event as one item', async () => {
		const secret = newSecret();
		const event = sampleEvent('evt_1');
		const { context, response } = webhookContext({ request: delivery(secret, 'evt_1', compact(event)), staticData: { secret } });
		const result = await trigger.webhook.call(context);
		assert.deepEqual(result.workflowData, [[{ json: event }]]);
		assert.equal(response.status, undefined);
	});

	test('emits one item per event of a batch', async () => {
		const secret = newSecret();
		const events = [sampleEvent('evt_1'), sampleEvent('evt_2', 'vip'), sampleEvent('evt_3')];
		const { context } = webhookContext({ request: delivery(secret, 'bat_1', batchBody(events)), staticData: { secret } });
		const result = await trigger.webhook.call(context);
		assert.deepEqual(result.workflowData, [events.map((json) => ({ json }))]);
	});

	test('a repeated webhook-id within the window answers 200 and emits nothing', async () => {
		const secret = newSecret();
		const staticData: Record<string, unknown> = { secret };
		const body = compact(sampleEvent('evt_1'));
		const first = webhookContext({ request: delivery(secret, 'evt_1', body), staticData, dedupeMinutes: 30 });
		assert.equal((await trigger.webhook.call(first.context)).workflowData?.[0].length, 1);
		const again = webhookContext({ request: delivery(secret, 'evt_1', body), staticData, dedupeMinutes: 30 });
		const result = await trigger.webhook.call(again.context);
		assert.deepEqual(result, { webhookResponse: { received: 0, duplicates: 1 } });
		assert.equal(again.response.status, undefined);
	});

	test('with the window at 0 a repeat goes through', async () => {
		const secret = newSecret();
		const staticData: Record<string, unknown> = { secret };
		const body = compact(sampleEvent('evt_1'));
		for (let i = 0; i < 2; i++) {
			const { context } = webhookContext({ request: delivery(secret, 'evt_1', body), staticData, dedupeMinutes: 0 });
			assert.equal((await trigger.webhook.call(context)).workflowData?.[0].length, 1);
		}
		assert.equal(staticData.seen, undefined);
	});

	test('a signed body that is not events answers 400', async () => {
		const secret = newSecret();
		const { context, response } = webhookContext({ request: delivery(secret, 'evt_1', '[1]'), staticData: { secret } });
		assert.deepEqual(await trigger.webhook.call(context), { noWebhookResponse: true });
		assert.equal(response.status, 400);
	});
});

describe('webhookMethods', () => {
	test('create subscribes the webhook URL to the campaigns and keeps id and secret in static data', async () => {
		const staticData: Record<string, unknown> = {};
		assert.equal(await hooks.create.call(hooksFor(staticData)), true);
		const [subscription] = worker.subscriptions.values();
		assert.deepEqual(
			{ url: subscription.url, campaigns: subscription.campaigns, description: subscription.description },
			{ url: WEBHOOK_URL, campaigns: ['welcome', 'vip'], description: 'n8n workflow "Welcome mails", node "Segment Worker Trigger"' },
		);
		assert.deepEqual(staticData, {
			subscriptionId: subscription.id,
			secret: subscription.secret,
			url: WEBHOOK_URL,
			campaigns: ['welcome', 'vip'],
		});
		assert.equal(worker.requests[0].authorization, `Bearer ${ADMIN_KEY}`);
	});

	test('an event signed with the secret the worker handed out is accepted', async () => {
		const staticData: Record<string, unknown> = {};
		await hooks.create.call(hooksFor(staticData));
		const [subscription] = worker.subscriptions.values();
		const event = sampleEvent('evt_1');
		const { context } = webhookContext({ request: delivery(subscription.secret, 'evt_1', compact(event)), staticData });
		assert.deepEqual((await trigger.webhook.call(context)).workflowData, [[{ json: event }]]);
	});

	test('checkExists is true while the worker lists the subscription as made', async () => {
		const staticData: Record<string, unknown> = {};
		await hooks.create.call(hooksFor(staticData));
		assert.equal(await hooks.checkExists.call(hooksFor(staticData)), true);
	});

	test('checkExists is false without a stored subscription, and asks nothing', async () => {
		assert.equal(await hooks.checkExists.call(hooksFor({})), false);
		assert.equal(worker.requests.length, 0);
	});

	test('checkExists is false and clears static data when the worker no longer lists it', async () => {
		const staticData: Record<string, unknown> = { seen: { evt_0: 1 } };
		await hooks.create.call(hooksFor(staticData));
		worker.subscriptions.clear();
		assert.equal(await hooks.checkExists.call(hooksFor(staticData)), false);
		assert.deepEqual(staticData, { seen: { evt_0: 1 } });
	});

	test('checkExists replaces a subscription made for other campaigns: deletes it, answers false', async () => {
		const staticData: Record<string, unknown> = {};
		await hooks.create.call(hooksFor(staticData, ['welcome']));
		const [old] = worker.subscriptions.keys();
		assert.equal(await hooks.checkExists.call(hooksFor(staticData, ['welcome', 'vip'])), false);
		assert.equal(worker.subscriptions.has(old), false);
		assert.equal(staticData.subscriptionId, undefined);
	});

	test('delete unsubscribes and clears static data', async () => {
		const staticData: Record<string, unknown> = {};
		await hooks.create.call(hooksFor(staticData));
		assert.equal(await hooks.delete.call(hooksFor(staticData)), true);
		assert.equal(worker.subscriptions.size, 0);
		assert.deepEqual(staticData, {});
		assert.deepEqual(worker.requests.at(-1)?.method, 'DELETE');
	});

	test('delete counts a 404 as deleted', async () => {
		const staticData: Record<string, unknown> = { subscriptionId: 'sub_gone', secret: 'whsec_eA==' };
		assert.equal(await hooks.delete.call(hooksFor(staticData)), true);
		assert.deepEqual(staticData, {});
	});

	test('delete keeps the subscription when the worker refuses, and says so', async () => {
		const staticData: Record<string, unknown> = {};
		await hooks.create.call(hooksFor(staticData));
		assert.equal(await hooks.delete.call(hooksFor(staticData, ['welcome'], READ_KEY)), false);
		assert.equal(typeof staticData.subscriptionId, 'string');
	});

	test('create with a read-only key fails naming the admin key', async () => {
		await assert.rejects(hooks.create.call(hooksFor({}, ['welcome'], READ_KEY)), /HTTP 403.*ADMIN_API_KEYS/);
	});

	test('create without campaigns fails before asking the worker', async () => {
		await assert.rejects(hooks.create.call(hooksFor({}, [])), /at least one campaign/);
		assert.equal(worker.requests.length, 0);
	});
});

describe('loadOptions', () => {
	test('getCampaigns offers the campaigns of GET /api/campaigns', async () => {
		const context = hooksFor({}) as unknown as ThisParameterType<typeof trigger.methods.loadOptions.getCampaigns>;
		assert.deepEqual(await trigger.methods.loadOptions.getCampaigns.call(context), [
			{ name: 'welcome', value: 'welcome', description: 'a customer enters New' },
			{ name: 'vip', value: 'vip', description: 'a customer enters VIP' },
		]);
	});
});
