/**
 * The one place the nodes talk HTTP to the worker: n8n's authenticated request helper with the credential's base
 * URL, a deadline, and every non-2xx answer turned into an error that says what to fix.
 */

import type {
	IExecuteFunctions,
	IHookFunctions,
	IHttpRequestOptions,
	ILoadOptionsFunctions,
	JsonObject,
} from 'n8n-workflow';
import { NodeApiError } from 'n8n-workflow';

import { failureDetails, failureMessage, succeeded, type ApiAnswer } from './answers';
import { joinUrl, type ApiRequest } from './requests';

export const CREDENTIAL_NAME = 'segmentWorkerApi';
// POST /api/orders evaluates the touched customers before it answers: allow it more than a plain read needs.
const TIMEOUT_MS = 60_000;

type ApiContext = IExecuteFunctions | IHookFunctions | ILoadOptionsFunctions;

/** The worker's answer, whatever its status. Network failures throw (n8n's helper says what failed). */
export async function send(this: ApiContext, request: ApiRequest): Promise<ApiAnswer> {
	const credentials = await this.getCredentials(CREDENTIAL_NAME);
	const options: IHttpRequestOptions = {
		method: request.method,
		url: joinUrl(String(credentials.baseUrl ?? ''), request.path),
		json: true,
		timeout: TIMEOUT_MS,
		// Statuses are decided here, in one place, not by the helper's generic errors.
		ignoreHttpStatusErrors: true,
		returnFullResponse: true,
	};
	if (request.qs !== undefined) options.qs = request.qs;
	if (request.body !== undefined) options.body = request.body as IHttpRequestOptions['body'];
	const response = (await this.helpers.httpRequestWithAuthentication.call(this, CREDENTIAL_NAME, options)) as {
		statusCode: number;
		body: unknown;
	};
	return { statusCode: response.statusCode, body: response.body };
}

/** The body of a 2xx answer (or of a status in `alsoAccepted`); a NodeApiError for anything else. */
export async function call(
	this: ApiContext,
	request: ApiRequest,
	options: { itemIndex?: number; alsoAccepted?: number[] } = {},
): Promise<unknown> {
	const answer = await send.call(this, request);
	if (succeeded(answer) || (options.alsoAccepted ?? []).includes(answer.statusCode)) {
		return answer.body;
	}
	throw new NodeApiError(this.getNode(), { statusCode: answer.statusCode, body: answer.body } as JsonObject, {
		message: failureMessage(request, answer),
		description: failureDetails(answer),
		httpCode: String(answer.statusCode),
		itemIndex: options.itemIndex,
	});
}
