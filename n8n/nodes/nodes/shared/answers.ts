/**
 * Reading the worker's answers: whether a status is a success, the message a refusal carries ({"error": ...,
 * "errors": [...]}), and the rows a list answer holds.
 */

import { isObject } from './events';
import type { ApiRequest } from './requests';

export interface ApiAnswer {
	statusCode: number;
	body: unknown;
}

export function succeeded(answer: ApiAnswer): boolean {
	return answer.statusCode >= 200 && answer.statusCode < 300;
}

/** One line for people: what was asked, the status, and the API's own words with a hint for the usual causes. */
export function failureMessage(request: ApiRequest, answer: ApiAnswer): string {
	const said = isObject(answer.body) && typeof answer.body.error === 'string' ? `: ${answer.body.error}` : '';
	return `${request.method} ${request.path} answered HTTP ${answer.statusCode}${said}${hint(answer.statusCode)}`;
}

/** The record-by-record reasons of a refused order batch, if any. */
export function failureDetails(answer: ApiAnswer): string | undefined {
	if (!isObject(answer.body) || !Array.isArray(answer.body.errors)) return undefined;
	return answer.body.errors.map(String).join('\n');
}

/** The rows of a list answer ({data: [...]}) as items. */
export function rows(body: unknown): Record<string, unknown>[] {
	const data = isObject(body) ? body.data : undefined;
	return Array.isArray(data) ? data.filter(isObject) : [];
}

/** The object under `data` of a one-thing answer ({data: {...}}), or the answer itself. */
export function unwrapped(body: unknown): Record<string, unknown> {
	if (isObject(body) && isObject(body.data)) return body.data;
	return isObject(body) ? body : { value: body };
}

function hint(status: number): string {
	if (status === 401) return ' (check the API key in the Segment Worker API credential)';
	if (status === 403) return ' (this key may only read: use a key from ADMIN_API_KEYS)';
	return '';
}

export interface Choice {
	name: string;
	value: string;
	description?: string;
}

/** The campaigns of GET /api/campaigns as choices, by name. */
export function campaignChoices(body: unknown): Choice[] {
	return rows(body)
		.filter((campaign) => typeof campaign.name === 'string')
		.map((campaign) => ({
			name: campaign.name as string,
			value: campaign.name as string,
			...(typeof campaign.description === 'string' ? { description: campaign.description } : {}),
		}));
}

/** The purchase frequencies of the rules in force, from the OpenAPI document's `purchaseFrequency` parameter. */
export function frequencyChoices(document: unknown): Choice[] {
	const names = (document as { components?: { parameters?: Record<string, { schema?: { enum?: unknown } }> } })
		?.components?.parameters?.purchaseFrequency?.schema?.enum;
	return Array.isArray(names)
		? names.filter((name): name is string => typeof name === 'string').map((name) => ({ name, value: name }))
		: [];
}

/** The segments of GET /api/segments as choices, in the rules' order. */
export function segmentChoices(body: unknown): Choice[] {
	return rows(body)
		.filter((row) => typeof row.segment === 'string')
		.map((row) => ({ name: row.segment as string, value: row.segment as string }));
}
