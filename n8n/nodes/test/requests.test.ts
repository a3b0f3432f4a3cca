import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
	createOrders,
	createSubscription,
	deleteSubscription,
	getCustomer,
	joinUrl,
	listCampaigns,
	listCustomers,
	listSubscriptions,
	replayDeadEvents,
	replayEvent,
	RequestInputError,
	segmentSummary,
} from '../nodes/shared/requests';

describe('customer requests', () => {
	test('get one customer: GET /api/customers/<contactID>, the id escaped as a path segment', () => {
		assert.deepEqual(getCustomer('C 1/2'), { method: 'GET', path: '/api/customers/C%201%2F2' });
	});

	test('get one customer as of a moment', () => {
		assert.deepEqual(getCustomer('C-1', '2026-02-21'), {
			method: 'GET',
			path: '/api/customers/C-1',
			qs: { asOf: '2026-02-21' },
		});
	});

	test('get one customer needs a contact id', () => {
		assert.throws(() => getCustomer('  '), RequestInputError);
	});

	test('list: filters, page size and cursor in the query, empty filters left out', () => {
		assert.deepEqual(
			listCustomers({ segment: 'VIP', purchaseFrequency: 'Monthly', sort: '-totalSpend', asOf: '' }, 100, 'QzEw'),
			{
				method: 'GET',
				path: '/api/customers',
				qs: { segment: 'VIP', purchaseFrequency: 'Monthly', sort: '-totalSpend', limit: 100, cursor: 'QzEw' },
			},
		);
	});

	test('list without filters asks only for the page size', () => {
		assert.deepEqual(listCustomers({}, 1000), { method: 'GET', path: '/api/customers', qs: { limit: 1000 } });
	});

	test('list refuses a page size the API refuses, and an unknown sort', () => {
		assert.throws(() => listCustomers({}, 1001), RequestInputError);
		assert.throws(() => listCustomers({}, 0), RequestInputError);
		assert.throws(() => listCustomers({ sort: 'name' }, 10), RequestInputError);
	});

	test('segment summary: GET /api/segments, asOf optional', () => {
		assert.deepEqual(segmentSummary(), { method: 'GET', path: '/api/segments' });
		assert.deepEqual(segmentSummary('2026-02-21T08:30:00Z'), {
			method: 'GET',
			path: '/api/segments',
			qs: { asOf: '2026-02-21T08:30:00Z' },
		});
	});
});

describe('order requests', () => {
	test('create: one POST /api/orders with the list of orders', () => {
		const orders = [
			{ contactID: 'C-1', orderReference: 'ORD-1', orderDate: '2026-02-21T08:30:00Z', total: '149.90' },
			{ contactID: 'C-2', orderReference: 'ORD-2', orderDate: '2026-02-21T08:31:00Z', total: '20.00' },
		];
		assert.deepEqual(createOrders(orders), { method: 'POST', path: '/api/orders', body: orders });
	});

	test('create refuses an empty list', () => {
		assert.throws(() => createOrders([]), RequestInputError);
	});
});

describe('event requests', () => {
	test('replay one event: POST /api/events/<id>/replay', () => {
		assert.deepEqual(replayEvent('evt_1'), { method: 'POST', path: '/api/events/evt_1/replay', body: {} });
	});

	test("replay a campaign's dead events: POST /api/events/replay with status, campaign and limit", () => {
		assert.deepEqual(replayDeadEvents('win-back', 200), {
			method: 'POST',
			path: '/api/events/replay',
			body: { status: 'dead', campaign: 'win-back', limit: 200 },
		});
	});

	test('replay every campaign: no campaign, no limit (0 is the worker maximum)', () => {
		assert.deepEqual(replayDeadEvents('', 0), { method: 'POST', path: '/api/events/replay', body: { status: 'dead' } });
	});

	test('replay refuses a limit above the worker maximum', () => {
		assert.throws(() => replayDeadEvents('vip', 1001), RequestInputError);
	});

	test('campaigns: GET /api/campaigns', () => {
		assert.deepEqual(listCampaigns(), { method: 'GET', path: '/api/campaigns' });
	});
});

describe('subscription requests', () => {
	test('subscribe: POST /api/webhooks with url, campaigns and description', () => {
		assert.deepEqual(
			createSubscription({ url: 'https://n8n.example.com/webhook/abc/webhook', campaigns: ['welcome', 'vip'], description: 'n8n' }),
			{
				method: 'POST',
				path: '/api/webhooks',
				body: { url: 'https://n8n.example.com/webhook/abc/webhook', campaigns: ['welcome', 'vip'], description: 'n8n' },
			},
		);
	});

	test('subscribe refuses no campaigns and a URL that is not http(s)', () => {
		assert.throws(() => createSubscription({ url: 'https://n8n/x', campaigns: [] }), RequestInputError);
		assert.throws(() => createSubscription({ url: 'ftp://n8n/x', campaigns: ['vip'] }), RequestInputError);
	});

	test('list: GET /api/webhooks; unsubscribe: DELETE /api/webhooks/<id>', () => {
		assert.deepEqual(listSubscriptions(), { method: 'GET', path: '/api/webhooks' });
		assert.deepEqual(deleteSubscription('sub_1'), { method: 'DELETE', path: '/api/webhooks/sub_1' });
	});
});

describe('joinUrl', () => {
	test('joins with or without a trailing slash, keeping a path prefix', () => {
		assert.equal(joinUrl('http://127.0.0.1:8000/', '/api/segments'), 'http://127.0.0.1:8000/api/segments');
		assert.equal(joinUrl('https://example.com/worker', '/api/segments'), 'https://example.com/worker/api/segments');
	});

	test('refuses a base URL without http(s)', () => {
		assert.throws(() => joinUrl('example.com', '/api/segments'), RequestInputError);
	});
});
