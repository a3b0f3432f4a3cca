/**
 * Every call the nodes make to the worker's API, as plain data (method, path, query, body): what the transport
 * sends, and what the tests check, without n8n.
 */

export type HttpMethod = 'GET' | 'POST' | 'DELETE';
export type Query = Record<string, string | number>;

export interface ApiRequest {
	method: HttpMethod;
	path: string;
	qs?: Query;
	body?: unknown;
}

export class RequestInputError extends Error {}

/** The API caps a page at 1000 (worker/api/params.py MAX_LIMIT). */
export const MAX_PAGE_SIZE = 1000;
/** A bulk replay queues at most 1000 dead events per call (worker/store/base.py BULK_REPLAY_LIMIT). */
export const MAX_REPLAY_LIMIT = 1000;

export const CUSTOMER_SORTS = [
	'contactID',
	'-contactID',
	'totalSpend',
	'-totalSpend',
	'lastOrderDate',
	'-lastOrderDate',
] as const;

export interface CustomerFilters {
	segment?: string;
	purchaseFrequency?: string;
	sort?: string;
	asOf?: string;
}

export interface Subscription {
	url: string;
	campaigns: string[];
	description?: string;
}

// --- customers and segments -----------------------------------------------------------------------------------

export function getCustomer(contactId: string, asOf?: string): ApiRequest {
	return { method: 'GET', path: `/api/customers/${segment(contactId, 'Contact ID')}`, ...query({ asOf }) };
}

export function listCustomers(filters: CustomerFilters, limit: number, cursor?: string): ApiRequest {
	if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_SIZE) {
		throw new RequestInputError(`page size must be a whole number from 1 to ${MAX_PAGE_SIZE}, got ${limit}`);
	}
	if (filters.sort && !(CUSTOMER_SORTS as readonly string[]).includes(filters.sort)) {
		throw new RequestInputError(`sort must be one of ${CUSTOMER_SORTS.join(', ')}, got '${filters.sort}'`);
	}
	return {
		method: 'GET',
		path: '/api/customers',
		qs: query({ ...filters, limit, cursor }).qs ?? {},
	};
}

export function segmentSummary(asOf?: string): ApiRequest {
	return { method: 'GET', path: '/api/segments', ...query({ asOf }) };
}

// --- orders ---------------------------------------------------------------------------------------------------

/** One POST with every order: the API stores all or none, and evaluates the customers touched at once. */
export function createOrders(orders: Record<string, unknown>[]): ApiRequest {
	if (orders.length === 0) {
		throw new RequestInputError('no orders to send');
	}
	return { method: 'POST', path: '/api/orders', body: orders };
}

// --- events and campaigns -------------------------------------------------------------------------------------

export function replayEvent(eventId: string): ApiRequest {
	return { method: 'POST', path: `/api/events/${segment(eventId, 'Event ID')}/replay`, body: {} };
}

/** Dead events of one campaign (or of every campaign when none is given) pending again. */
export function replayDeadEvents(campaign?: string, limit?: number): ApiRequest {
	const body: Record<string, unknown> = { status: 'dead' };
	if (campaign) body.campaign = campaign;
	if (limit !== undefined && limit !== 0) {
		if (!Number.isInteger(limit) || limit < 1 || limit > MAX_REPLAY_LIMIT) {
			throw new RequestInputError(`limit must be a whole number from 1 to ${MAX_REPLAY_LIMIT}, got ${limit}`);
		}
		body.limit = limit;
	}
	return { method: 'POST', path: '/api/events/replay', body };
}

export function listCampaigns(): ApiRequest {
	return { method: 'GET', path: '/api/campaigns' };
}

/** The API's OpenAPI document, built from the rules in force: it names the purchase frequencies. */
export function openApiDocument(): ApiRequest {
	return { method: 'GET', path: '/api/openapi.json' };
}

// --- subscriptions (admin key) --------------------------------------------------------------------------------

export function listSubscriptions(): ApiRequest {
	return { method: 'GET', path: '/api/webhooks' };
}

export function createSubscription(subscription: Subscription): ApiRequest {
	if (!/^https?:\/\//i.test(subscription.url)) {
		throw new RequestInputError(`the webhook URL must be http(s), got '${subscription.url}'`);
	}
	if (subscription.campaigns.length === 0) {
		throw new RequestInputError('choose at least one campaign to subscribe to');
	}
	const body: Record<string, unknown> = { url: subscription.url, campaigns: [...subscription.campaigns] };
	if (subscription.description) body.description = subscription.description;
	return { method: 'POST', path: '/api/webhooks', body };
}

export function deleteSubscription(id: string): ApiRequest {
	return { method: 'DELETE', path: `/api/webhooks/${segment(id, 'subscription id')}` };
}

// --- URLs -----------------------------------------------------------------------------------------------------

/** The credential's base URL (with or without a trailing slash, with or without a path prefix) and a path. */
export function joinUrl(baseUrl: string, path: string): string {
	const base = baseUrl.trim().replace(/\/+$/, '');
	if (!/^https?:\/\/[^/]/i.test(base)) {
		throw new RequestInputError(`the credential's Base URL must start with http:// or https://, got '${baseUrl}'`);
	}
	return `${base}${path}`;
}

function segment(value: string, name: string): string {
	const text = String(value ?? '').trim();
	if (text === '') throw new RequestInputError(`${name} is required`);
	return encodeURIComponent(text);
}

/** `qs` holding the given values that are set; empty strings and undefined are left out. */
function query(values: Record<string, string | number | undefined>): { qs?: Query } {
	const qs: Query = {};
	for (const [name, raw] of Object.entries(values)) {
		const value = typeof raw === 'string' ? raw.trim() : raw;
		if (value === undefined || value === '') continue;
		qs[name] = value;
	}
	return Object.keys(qs).length ? { qs } : {};
}
