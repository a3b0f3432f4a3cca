/**
 * The few parts of n8n's node contexts the nodes use, faked: static data, parameters, the webhook's request and
 * response, and an authenticated HTTP helper that really sends (with fetch) the way n8n's does.
 */

import type {
	IExecuteFunctions,
	IHookFunctions,
	IHttpRequestOptions,
	INode,
	INodeExecutionData,
	IWebhookFunctions,
} from 'n8n-workflow';

import type { DeliveryRequest } from '../../nodes/shared/delivery';

export const NODE: INode = {
	id: 'node-1',
	name: 'Segment Worker',
	type: 'n8n-nodes-segment-worker.segmentWorker',
	typeVersion: 1,
	position: [0, 0],
	parameters: {},
};

export interface Api {
	baseUrl: string;
	apiKey: string;
}

/** n8n's httpRequestWithAuthentication as the nodes use it: qs, JSON bodies, and the credential's bearer header. */
export function httpHelper(api: Api) {
	return async function httpRequestWithAuthentication(
		this: unknown,
		_credential: string,
		options: IHttpRequestOptions,
	): Promise<unknown> {
		const url = new URL(options.url);
		for (const [name, value] of Object.entries(options.qs ?? {})) url.searchParams.set(name, String(value));
		const hasBody = options.body !== undefined;
		const response = await fetch(url, {
			method: options.method ?? 'GET',
			headers: {
				Authorization: `Bearer ${api.apiKey}`,
				...(hasBody ? { 'Content-Type': 'application/json' } : {}),
			},
			body: hasBody ? JSON.stringify(options.body) : undefined,
		});
		const text = await response.text();
		const body = text === '' ? '' : JSON.parse(text);
		if (!options.ignoreHttpStatusErrors && !response.ok) {
			throw new Error(`Request failed with status code ${response.status}`);
		}
		return options.returnFullResponse ? { statusCode: response.status, body, headers: {} } : body;
	};
}

export function hookContext(
	api: Api,
	settings: { staticData: Record<string, unknown>; campaigns: string[]; webhookUrl: string },
): IHookFunctions {
	return {
		getWorkflowStaticData: () => settings.staticData,
		getNodeParameter: (name: string, fallback?: unknown) => (name === 'campaigns' ? settings.campaigns : fallback),
		getNodeWebhookUrl: () => settings.webhookUrl,
		getWorkflow: () => ({ id: 'wf-1', name: 'Welcome mails', active: true }),
		getNode: () => ({ ...NODE, name: 'Segment Worker Trigger' }),
		getCredentials: async () => ({ baseUrl: api.baseUrl, apiKey: api.apiKey }),
		helpers: { httpRequestWithAuthentication: httpHelper(api) },
	} as unknown as IHookFunctions;
}

export interface RecordedResponse {
	status?: number;
	headers?: Record<string, string>;
	body?: string;
}

export function webhookContext(settings: {
	request: DeliveryRequest;
	staticData: Record<string, unknown>;
	dedupeMinutes?: number;
}): { context: IWebhookFunctions; response: RecordedResponse } {
	const response: RecordedResponse = {};
	const res = {
		writeHead(status: number, headers?: Record<string, string>) {
			response.status = status;
			response.headers = headers;
			return res;
		},
		end(body?: string) {
			response.body = body;
			return res;
		},
	};
	const context = {
		getWorkflowStaticData: () => settings.staticData,
		getRequestObject: () => settings.request,
		getResponseObject: () => res,
		getHeaderData: () => settings.request.headers ?? {},
		getNodeParameter: (name: string, fallback?: unknown) =>
			name === 'dedupeMinutes' && settings.dedupeMinutes !== undefined ? settings.dedupeMinutes : fallback,
		getNode: () => ({ ...NODE, name: 'Segment Worker Trigger' }),
		helpers: {
			returnJsonArray: (items: Record<string, unknown>[]) => items.map((json) => ({ json })),
		},
	} as unknown as IWebhookFunctions;
	return { context, response };
}

/** Parameters by name: a value for every item, or a function of the item's index. */
export type Parameters = Record<string, unknown | ((itemIndex: number) => unknown)>;

export function executeContext(
	api: Api,
	settings: { items: INodeExecutionData[]; parameters: Parameters; continueOnFail?: boolean },
): IExecuteFunctions {
	return {
		getInputData: () => settings.items,
		getNodeParameter: (name: string, itemIndex: number, fallback?: unknown) => {
			if (!(name in settings.parameters)) {
				if (fallback !== undefined) return fallback;
				throw new Error(`no parameter '${name}' in the test`);
			}
			const value = settings.parameters[name];
			return typeof value === 'function' ? (value as (index: number) => unknown)(itemIndex) : value;
		},
		continueOnFail: () => settings.continueOnFail ?? false,
		getNode: () => NODE,
		getCredentials: async () => ({ baseUrl: api.baseUrl, apiKey: api.apiKey }),
		helpers: { httpRequestWithAuthentication: httpHelper(api) },
	} as unknown as IExecuteFunctions;
}
