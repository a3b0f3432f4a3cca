import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';

import { SegmentWorker } from '../nodes/SegmentWorker/SegmentWorker.node';
import { frequencyChoices } from '../nodes/shared/answers';
import { ADMIN_KEY, FakeWorker, READ_KEY } from './support/fakeWorker';
import { executeContext, type Parameters } from './support/fakeN8n';

const node = new SegmentWorker();
const worker = new FakeWorker();

before(async () => await worker.start());
after(async () => await worker.stop());
beforeEach(() => worker.reset());

async function run(parameters: Parameters, items = [{ json: {} }], apiKey = ADMIN_KEY) {
	const context = executeContext({ baseUrl: `${worker.url}/`, apiKey }, { items, parameters });
	return (await node.execute.call(context))[0];
}

function someCustomers(count: number, segment = 'VIP') {
	return Array.from({ length: count }, (_, i) => ({ contactID: `C-${String(i).padStart(4, '0')}`, segment }));
}

describe('customer', () => {
	test('get: one item with the customer', async () => {
		worker.customers = someCustomers(1);
		const output = await run({ resource: 'customer', operation: 'get', contactId: 'C-0000', options: {} });
		assert.equal(output.length, 1);
		assert.equal(output[0].json.contactID, 'C-0000');
		assert.deepEqual(worker.requests.map((r) => `${r.method} ${r.path}`), ['GET /api/customers/C-0000']);
	});

	test('get: an unknown customer fails with the API message', async () => {
		await assert.rejects(
			run({ resource: 'customer', operation: 'get', contactId: 'nobody', options: {} }),
			/GET \/api\/customers\/nobody answered HTTP 404: customer 'nobody' not found/,
		);
	});

	test('get many, return all: follows every page with the largest page size', async () => {
		worker.customers = someCustomers(2500);
		const output = await run({ resource: 'customer', operation: 'getAll', returnAll: true, filters: { segment: 'VIP' } });
		assert.equal(output.length, 2500);
		assert.deepEqual(
			worker.requests.map((r) => [r.query.limit, r.query.segment, r.query.cursor !== undefined]),
			[['1000', 'VIP', false], ['1000', 'VIP', true], ['1000', 'VIP', true]],
		);
	});

	test('get many with a limit: continues past a page shortened by stale rows', async () => {
		worker.customers = someCustomers(10);
		worker.customers[1].stale = true;
		const output = await run({ resource: 'customer', operation: 'getAll', returnAll: false, limit: 3, filters: {} });
		assert.deepEqual(output.map((item) => item.json.contactID), ['C-0000', 'C-0002', 'C-0003']);
		assert.deepEqual(worker.requests.map((r) => r.query.limit), ['3', '1']);
	});

	test('get many: filters go in the query', async () => {
		await run({
			resource: 'customer',
			operation: 'getAll',
			returnAll: false,
			limit: 5,
			filters: { segment: 'Dormant', purchaseFrequency: 'Monthly', sort: '-lastOrderDate', asOf: '2026-02-21' },
		});
		assert.deepEqual(worker.requests[0].query, {
			segment: 'Dormant',
			purchaseFrequency: 'Monthly',
			sort: '-lastOrderDate',
			asOf: '2026-02-21',
			limit: '5',
		});
	});
});

describe('order', () => {
	const items = [
		{ json: { contactID: 'C-1', orderReference: 'ORD-1', orderDate: '2026-02-21T08:30:00Z', total: '149.90', shop: 'x' } },
		{ json: { contactID: 'C-2', orderReference: 'ORD-2', orderDate: '2026-02-21T08:31:00Z', total: '20.00' } },
	];

	test('create from input items: one POST with every order, one item with the answer', async () => {
		const output = await run({ resource: 'order', operation: 'create', source: 'inputItems' }, items);
		assert.equal(worker.requests.length, 1);
		assert.deepEqual(worker.requests[0].body, [
			{ contactID: 'C-1', orderReference: 'ORD-1', orderDate: '2026-02-21T08:30:00Z', total: '149.90' },
			{ contactID: 'C-2', orderReference: 'ORD-2', orderDate: '2026-02-21T08:31:00Z', total: '20.00' },
		]);
		assert.equal(output.length, 1);
		assert.equal(output[0].json.imported, 2);
		assert.deepEqual(output[0].pairedItem, [{ item: 0 }, { item: 1 }]);
	});

	test('create from a JSON field: the lists of all items in one POST', async () => {
		const orders = (i: number) => JSON.stringify([{ contactID: `C-${i}`, orderReference: `O-${i}a` }, { contactID: `C-${i}`, orderReference: `O-${i}b` }]);
		await run({ resource: 'order', operation: 'create', source: 'json', ordersJson: orders }, [{ json: {} }, { json: {} }]);
		assert.equal(worker.requests.length, 1);
		assert.deepEqual((worker.requests[0].body as Array<{ orderReference: string }>).map((o) => o.orderReference), ['O-0a', 'O-0b', 'O-1a', 'O-1b']);
	});

	test('create from mapped fields', async () => {
		await run(
			{
				resource: 'order',
				operation: 'create',
				source: 'fields',
				contactID: (i: number) => `C-${i}`,
				orderReference: (i: number) => `ORD-${i}`,
				orderDate: '2026-02-21T08:30:00Z',
				total: '10.00',
				additionalFields: { email: 'a@example.com', name: '' },
			},
			[{ json: {} }],
		);
		assert.deepEqual(worker.requests[0].body, [
			{ contactID: 'C-0', orderReference: 'ORD-0', orderDate: '2026-02-21T08:30:00Z', total: '10.00', email: 'a@example.com' },
		]);
	});

	test('a refused batch fails with the record-by-record reasons', async () => {
		await assert.rejects(
			run({ resource: 'order', operation: 'create', source: 'json', ordersJson: '[{"total": "1.00"}]' }),
			(error: Error & { description?: string }) =>
				/HTTP 400: 1 of 1 order\(s\) rejected/.test(error.message) && /contactID is required/.test(error.description ?? ''),
		);
	});

	test('a read-only key is told to use an admin key', async () => {
		await assert.rejects(run({ resource: 'order', operation: 'create', source: 'inputItems' }, items, READ_KEY), /HTTP 403/);
	});
});

describe('segment', () => {
	test('summary: one item per segment, with asOf', async () => {
		const output = await run({ resource: 'segment', operation: 'getSummary', options: { asOf: '2026-01-01' } });
		assert.deepEqual(output.map((item) => item.json), [
			{ segment: 'VIP', customers: 1, totalSpend: '6000.00', share: 0.5, asOf: '2026-01-01' },
			{ segment: 'New', customers: 1, totalSpend: '320.00', share: 0.5, asOf: '2026-01-01' },
		]);
		assert.deepEqual(worker.requests[0].query, { asOf: '2026-01-01' });
	});
});

describe('event', () => {
	test('replay: POST /api/events/<id>/replay, the event as the item', async () => {
		const output = await run({ resource: 'event', operation: 'replay', eventId: 'evt_1' });
		assert.deepEqual(output[0].json, { id: 'evt_1', status: 'pending' });
		assert.deepEqual([worker.requests[0].method, worker.requests[0].path], ['POST', '/api/events/evt_1/replay']);
	});

	test("replay dead: a campaign's dead events", async () => {
		const output = await run({ resource: 'event', operation: 'replayDead', campaign: 'win-back', replayLimit: 50 });
		assert.deepEqual(worker.requests[0].body, { status: 'dead', campaign: 'win-back', limit: 50 });
		assert.deepEqual(output[0].json, { queued: 3, remaining: 0, status: 'dead', campaign: 'win-back' });
	});

	test('continue on fail: the error becomes the item', async () => {
		const context = executeContext(
			{ baseUrl: worker.url, apiKey: 'wrong' },
			{ items: [{ json: {} }], parameters: { resource: 'event', operation: 'replay', eventId: 'evt_1' }, continueOnFail: true },
		);
		const [output] = await node.execute.call(context);
		assert.match(String(output[0].json.error), /HTTP 401.*check the API key/);
	});
});

describe('loadOptions', () => {
	test('getPurchaseFrequencies offers the bands the worker\'s rules name, from its OpenAPI document', async () => {
		const context = executeContext({ baseUrl: `${worker.url}/`, apiKey: READ_KEY }, { items: [], parameters: {} });
		const load = node.methods.loadOptions.getPurchaseFrequencies as (this: unknown) => Promise<unknown>;
		assert.deepEqual(await load.call(context), [
			{ name: 'Weekly', value: 'Weekly' },
			{ name: 'Biweekly', value: 'Biweekly' },
		]);
		assert.deepEqual(worker.requests.map((r) => `${r.method} ${r.path}`), ['GET /api/openapi.json']);
	});
});

test('frequencyChoices: a document without the parameter, or with odd values, offers only the names', () => {
	assert.deepEqual(frequencyChoices({}), []);
	assert.deepEqual(frequencyChoices(null), []);
	const odd = { components: { parameters: { purchaseFrequency: { schema: { enum: ['Monthly', 7, null] } } } } };
	assert.deepEqual(frequencyChoices(odd), [{ name: 'Monthly', value: 'Monthly' }]);
});
