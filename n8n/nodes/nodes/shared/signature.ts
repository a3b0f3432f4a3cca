/**
 * Checking a delivery's Standard Webhooks signature (webhook-id, webhook-timestamp, webhook-signature) against the
 * subscription's secret, on the exact bytes that were sent. The only user of the `standardwebhooks` library.
 */

import { Webhook } from 'standardwebhooks';

/** What a delivery says about itself, taken from its headers (any case, first value of a repeated header). */
export interface SignatureHeaders {
	'webhook-id'?: string;
	'webhook-timestamp'?: string;
	'webhook-signature'?: string;
}

export type Verification =
	| { valid: true; messageId: string; payload: string }
	| { valid: false; reason: string };

type HeaderValues = Record<string, string | string[] | undefined>;

const SIGNATURE_HEADER_NAMES = ['webhook-id', 'webhook-timestamp', 'webhook-signature'] as const;
// The library's reasons, in words that say what to fix; its tolerance is fixed at 5 minutes either way.
const REASONS: Record<string, string> = {
	'Missing required headers': 'missing webhook-id, webhook-timestamp or webhook-signature header',
	'Invalid Signature Headers': 'webhook-timestamp is not a number of seconds',
	'Message timestamp too old': 'webhook-timestamp is more than 5 minutes old',
	'Message timestamp too new': 'webhook-timestamp is more than 5 minutes ahead',
	'No matching signature found': 'webhook-signature does not match the body',
};

export function signatureHeaders(headers: HeaderValues): SignatureHeaders {
	const found: SignatureHeaders = {};
	for (const [name, value] of Object.entries(headers)) {
		const lower = name.toLowerCase() as (typeof SIGNATURE_HEADER_NAMES)[number];
		if (!SIGNATURE_HEADER_NAMES.includes(lower)) continue;
		const first = Array.isArray(value) ? value[0] : value;
		if (typeof first === 'string') found[lower] = first;
	}
	return found;
}

/**
 * Whether `rawBody` was signed with `secret` less than 5 minutes from now. A `whsec_` secret is base64 after the
 * prefix (what POST /api/webhooks hands out); any other secret is used as its UTF-8 bytes, as the worker does.
 */
export function verifyDelivery(
	secret: string | undefined,
	rawBody: string | Buffer,
	headers: HeaderValues,
): Verification {
	if (!secret) {
		return { valid: false, reason: 'this trigger has no subscription secret; deactivate and activate the workflow' };
	}
	let webhook: Webhook;
	try {
		webhook = secret.startsWith('whsec_')
			? new Webhook(secret)
			: new Webhook(new Uint8Array(Buffer.from(secret, 'utf8')), { format: 'raw' });
	} catch {
		return { valid: false, reason: 'the stored subscription secret is not usable; deactivate and activate the workflow' };
	}
	const given = signatureHeaders(headers);
	const payload = Buffer.isBuffer(rawBody) ? rawBody.toString('utf8') : rawBody;
	try {
		webhook.verify(payload, given as Record<string, string>, { jsonParse: false });
	} catch (error) {
		const message = error instanceof Error ? error.message : String(error);
		return { valid: false, reason: REASONS[message] ?? `signature refused: ${message}` };
	}
	return { valid: true, messageId: given['webhook-id'] as string, payload };
}
