/**
 * The worker's side of Standard Webhooks, written with node:crypto alone (not the library the nodes use), so a
 * mistake in how the nodes verify shows as a failing test rather than agreeing with itself.
 */

import { createHmac, randomBytes } from 'node:crypto';

export function newSecret(): string {
	return `whsec_${randomBytes(24).toString('base64')}`;
}

export function nowSeconds(): number {
	return Math.floor(Date.now() / 1000);
}

export function sign(secret: string, id: string, timestamp: number, body: string | Buffer): string {
	const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
	const hmac = createHmac('sha256', key);
	hmac.update(`${id}.${timestamp}.`);
	hmac.update(body);
	return `v1,${hmac.digest('base64')}`;
}

export function signedHeaders(
	secret: string,
	id: string,
	body: string | Buffer,
	timestamp: number = nowSeconds(),
): Record<string, string> {
	return {
		'content-type': 'application/json',
		'webhook-id': id,
		'webhook-timestamp': String(timestamp),
		'webhook-signature': sign(secret, id, timestamp, body),
	};
}
