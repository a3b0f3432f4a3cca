/**
 * A stand-in for the worker's API on 127.0.0.1 (a free port, started and stopped by each test file): the routes
 * the nodes call, with the worker's shapes, keys and statuses, and a log of what was asked.
 */

import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const ADMIN_KEY = 'admin-key';
export const READ_KEY = 'read-key';

export interface LoggedRequest {
	method: string;
	path: string;
	query: Record<string, string>;
	body: unknown;
	authorization?: string;
}

export interface StoredSubscription {
	id: string;
	secret: string;
	url: string;
	campaigns: string[];
	description?: string;
	createdAt: string;
}

export interface FakeCustomer {
	contactID: string;
	segment: string;
	/** Listed by the store's index but left out of the page, as the API does for a stale stored segment. */
	stale?: boolean;
}

export class FakeWorker {
	url = '';
	requests: LoggedRequest[] = [];
	subscriptions = new Map<string, StoredSubscription>();
	customers: FakeCustomer[] = [];
	private server: Server = createServer((req, res) => void this.handle(req, res));
	private nextId = 1;

	async start(port = 0): Promise<void> {
		await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
		const address = this.server.address() as AddressInfo;
		this.url = `http://127.0.0.1:${address.port}`;
	}

	async stop(): Promise<void> {
		this.server.closeAllConnections();
		await new Promise<void>((resolve) => this.server.close(() => resolve()));
	}

	reset(): void {
		this.requests = [];
		this.subscriptions.clear();
		this.customers = [];
	}

	private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
		const url = new URL(req.url ?? '/', 'http://127.0.0.1');
		const raw = await readBody(req);
		const body = raw ? JSON.parse(raw) : undefined;
		const authorization = req.headers.authorization;
		this.requests.push({
			method: req.method ?? 'GET',
			path: url.pathname,
			query: Object.fromEntries(url.searchParams),
			body,
			authorization,
		});
		const key = authorization?.startsWith('Bearer ') ? authorization.slice('Bearer '.length) : undefined;
		if (key !== ADMIN_KEY && key !== READ_KEY) {
			return reply(res, 401, { error: "missing or invalid API key; send 'Authorization: Bearer <key>' or 'X-API-Key'" });
		}
		const writes = req.method !== 'GET' || url.pathname === '/api/webhooks';
		if (writes && key !== ADMIN_KEY) {
			return reply(res, 403, { error: 'this API key may read but not write' });
		}
		return this.route(req.method ?? 'GET', url, body, res);
	}

	private route(method: string, url: URL, body: unknown, res: ServerResponse): void {
		const path = url.pathname;
		const route = `${method} ${path}`;
		if (route === 'GET /api/campaigns') {
			const data = [
				{ name: 'welcome', description: 'a customer enters New', webhook: 'welcome', trigger: { entered: 'New' } },
				{ name: 'vip', description: 'a customer enters VIP', webhook: 'vip', trigger: { entered: 'VIP' } },
			];
			return reply(res, 200, { data, count: data.length, experiments: [] });
		}
		if (route === 'GET /api/openapi.json') {
			const purchaseFrequency = { name: 'purchaseFrequency', in: 'query', schema: { enum: ['Weekly', 'Biweekly'] } };
			return reply(res, 200, { openapi: '3.1.0', components: { parameters: { purchaseFrequency } } });
		}
		if (route === 'GET /api/segments') {
			return reply(res, 200, {
				data: [
					{ segment: 'VIP', customers: 1, totalSpend: '6000.00', share: 0.5 },
					{ segment: 'New', customers: 1, totalSpend: '320.00', share: 0.5 },
				],
				customers: 2,
				asOf: url.searchParams.get('asOf') ?? '2026-02-21T09:30:00.000Z',
			});
		}
		if (route === 'GET /api/customers') return this.customerPage(url, res);
		const customer = path.match(/^\/api\/customers\/([^/]+)$/);
		if (method === 'GET' && customer) {
			const id = decodeURIComponent(customer[1]);
			const found = this.customers.find((c) => c.contactID === id);
			if (!found) return reply(res, 404, { error: `customer '${id}' not found` });
			return reply(res, 200, { data: customerJson(found) });
		}
		if (route === 'POST /api/orders') {
			const orders = Array.isArray(body) ? body : [body];
			const bad = orders.findIndex((order) => !order || typeof order !== 'object' || !('contactID' in order));
			if (bad !== -1) {
				return reply(res, 400, {
					error: `1 of ${orders.length} order(s) rejected; nothing was stored`,
					errors: [`record ${bad + 1}: contactID is required`],
				});
			}
			return reply(res, 200, { imported: orders.length, updated: 0, unchanged: 0, customers: [], transitions: 0 });
		}
		const replay = path.match(/^\/api\/events\/([^/]+)\/replay$/);
		if (method === 'POST' && replay) {
			return reply(res, 202, { data: { id: decodeURIComponent(replay[1]), status: 'pending' } });
		}
		if (route === 'POST /api/events/replay') {
			const campaign = (body as { campaign?: string } | undefined)?.campaign ?? null;
			return reply(res, 202, { queued: 3, remaining: 0, status: 'dead', campaign });
		}
		if (route === 'POST /api/webhooks') return this.subscribe(body as Record<string, unknown>, res);
		if (route === 'GET /api/webhooks') {
			const data = [...this.subscriptions.values()].map(({ secret: _secret, ...listed }) => listed);
			return reply(res, 200, { data, count: data.length });
		}
		const subscription = path.match(/^\/api\/webhooks\/([^/]+)$/);
		if (method === 'DELETE' && subscription) {
			const id = decodeURIComponent(subscription[1]);
			if (!this.subscriptions.delete(id)) return reply(res, 404, { error: `webhook subscription '${id}' not found` });
			res.writeHead(204).end();
			return;
		}
		reply(res, 404, { error: `no route ${route}` });
	}

	private customerPage(url: URL, res: ServerResponse): void {
		const limit = Number(url.searchParams.get('limit') ?? 100);
		if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
			return reply(res, 400, { error: `limit: must be a whole number from 1 to 1000, got '${limit}'` });
		}
		const segment = url.searchParams.get('segment');
		const matching = this.customers.filter((c) => segment === null || c.segment === segment);
		const cursor = url.searchParams.get('cursor');
		const start = cursor === null ? 0 : Number(Buffer.from(cursor, 'base64url').toString('utf8'));
		const scanned = matching.slice(start, start + limit);
		const data = scanned.filter((c) => !c.stale).map(customerJson);
		const more = scanned.length === limit && start + limit < matching.length;
		const nextCursor = more ? Buffer.from(String(start + limit)).toString('base64url') : null;
		reply(res, 200, { data, count: data.length, total: matching.length, nextCursor });
	}

	private subscribe(body: Record<string, unknown>, res: ServerResponse): void {
		if (typeof body?.url !== 'string' || !Array.isArray(body.campaigns)) {
			return reply(res, 400, { error: 'url and campaigns are required' });
		}
		const stored: StoredSubscription = {
			id: `sub_${this.nextId++}`,
			secret: `whsec_${randomBytes(24).toString('base64')}`,
			url: body.url,
			campaigns: body.campaigns.map(String),
			description: typeof body.description === 'string' ? body.description : undefined,
			createdAt: '2026-02-21T09:30:00.000Z',
		};
		this.subscriptions.set(stored.id, stored);
		reply(res, 201, stored);
	}
}

function customerJson(customer: FakeCustomer): Record<string, unknown> {
	return {
		contactID: customer.contactID,
		name: `Customer ${customer.contactID}`,
		email: `${customer.contactID}@example.com`,
		metrics: { segment: customer.segment, orderCount: 2, totalSpend: '100.00' },
		experiments: {},
	};
}

function reply(res: ServerResponse, status: number, body: unknown): void {
	res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
	const chunks: Buffer[] = [];
	for await (const chunk of req) chunks.push(chunk as Buffer);
	return Buffer.concat(chunks).toString('utf8');
}
