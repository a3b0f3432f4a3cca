/**
 * The trigger's subscription as kept in the workflow's static data (id, secret, the URL and campaigns it was made
 * for), and whether the worker's list still holds it as wanted.
 */

import { isObject } from './events';
import type { SeenLog } from './dedupe';

/** The node's static data. `seen` belongs to the dedupe window, the rest to the subscription. */
export interface TriggerStaticData {
	subscriptionId?: string;
	secret?: string;
	url?: string;
	campaigns?: string[];
	seen?: SeenLog;
	[key: string]: unknown;
}

export interface WantedSubscription {
	url: string;
	campaigns: string[];
}

export interface CreatedSubscription {
	id: string;
	secret: string;
}

/**
 * current: listed as wanted, keep it. missing: never made, or gone from the worker. outdated: listed, but for
 * other campaigns or another URL (or its secret was lost here), so it must be replaced.
 */
export type Standing = 'current' | 'missing' | 'outdated';

export class SubscriptionAnswerError extends Error {}

export function standing(stored: TriggerStaticData, listAnswer: unknown, wanted: WantedSubscription): Standing {
	if (!stored.subscriptionId) return 'missing';
	const listed = listedSubscriptions(listAnswer).find((entry) => entry.id === stored.subscriptionId);
	if (listed === undefined) return 'missing';
	if (!stored.secret) return 'outdated';
	// The URL as sent or as the worker shows it: a worker that normalises URLs must not cause a new subscription
	// (and a new secret) at every activation.
	if (wanted.url !== stored.url && wanted.url !== listed.url) return 'outdated';
	const campaigns = Array.isArray(listed.campaigns) ? (listed.campaigns as unknown[]) : stored.campaigns ?? [];
	return sameSet(campaigns.map(String), wanted.campaigns) ? 'current' : 'outdated';
}

/** The id and secret in POST /api/webhooks's answer; a SubscriptionAnswerError when either is missing. */
export function createdSubscription(answer: unknown): CreatedSubscription {
	const body = isObject(answer) && isObject(answer.data) && !('id' in answer) ? answer.data : answer;
	if (!isObject(body) || typeof body.id !== 'string' || body.id === '') {
		throw new SubscriptionAnswerError('POST /api/webhooks answered without a subscription "id"');
	}
	if (typeof body.secret !== 'string' || body.secret === '') {
		throw new SubscriptionAnswerError('POST /api/webhooks answered without a "secret" to verify deliveries with');
	}
	return { id: body.id, secret: body.secret };
}

export function remember(staticData: TriggerStaticData, created: CreatedSubscription, wanted: WantedSubscription): void {
	staticData.subscriptionId = created.id;
	staticData.secret = created.secret;
	staticData.url = wanted.url;
	staticData.campaigns = [...wanted.campaigns];
}

/** Clears the subscription; the dedupe log stays, its entries age out on their own. */
export function forget(staticData: TriggerStaticData): void {
	delete staticData.subscriptionId;
	delete staticData.secret;
	delete staticData.url;
	delete staticData.campaigns;
}

function listedSubscriptions(answer: unknown): Array<Record<string, unknown>> {
	const data = isObject(answer) ? answer.data : answer;
	if (!Array.isArray(data)) {
		throw new SubscriptionAnswerError('GET /api/webhooks answered without a "data" list');
	}
	return data.filter(isObject);
}

function sameSet(a: string[], b: string[]): boolean {
	const left = new Set(a);
	const right = new Set(b);
	return left.size === right.size && [...left].every((value) => right.has(value));
}
