import type {
	IDataObject,
	IHookFunctions,
	INodeType,
	INodeTypeDescription,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';
import { NodeConnectionTypes, NodeOperationError } from 'n8n-workflow';

import { getCampaigns } from '../shared/choices';
import { rawBodyOf, receive, type DeliveryRequest } from '../shared/delivery';
import { RequestInputError, createSubscription, deleteSubscription, listSubscriptions } from '../shared/requests';
import {
	createdSubscription,
	forget,
	remember,
	standing,
	type TriggerStaticData,
	type WantedSubscription,
} from '../shared/subscription';
import { call } from '../shared/transport';

export const DEFAULT_DEDUPE_MINUTES = 60;

/**
 * Subscribes itself to the chosen campaigns when the workflow is activated (POST /api/webhooks, its own secret
 * kept in the workflow's static data), unsubscribes when it is deactivated, and emits one item per event of every
 * delivery whose Standard Webhooks signature holds.
 */
export class SegmentWorkerTrigger implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Segment Worker Trigger',
		name: 'segmentWorkerTrigger',
		icon: 'file:segmentWorker.svg',
		group: ['trigger'],
		version: 1,
		subtitle: '={{ ($parameter["campaigns"] || []).join(", ") }}',
		description: 'Starts the workflow when a customer moves segment and a campaign fires',
		defaults: {
			name: 'Segment Worker Trigger',
		},
		inputs: [],
		outputs: [NodeConnectionTypes.Main],
		credentials: [
			{
				name: 'segmentWorkerApi',
				required: true,
			},
		],
		webhooks: [
			{
				name: 'default',
				httpMethod: 'POST',
				responseMode: 'onReceived',
				path: 'webhook',
			},
		],
		properties: [
			{
				displayName: 'Campaign Names or IDs',
				name: 'campaigns',
				type: 'multiOptions',
				typeOptions: {
					loadOptionsMethod: 'getCampaigns',
				},
				required: true,
				default: [],
				description:
					'The campaigns whose events start this workflow (from rules.yaml on the worker). Choose from the list, or specify names using an <a href="https://docs.n8n.io/code/expressions/">expression</a>.',
			},
			{
				displayName: 'Ignore Duplicates Within (Minutes)',
				name: 'dedupeMinutes',
				type: 'number',
				typeOptions: {
					minValue: 0,
				},
				default: DEFAULT_DEDUPE_MINUTES,
				description:
					'The worker delivers at least once: after a timeout the same delivery (same webhook-id) can arrive again. Events seen this many minutes ago or less are dropped; 0 lets every repeat through.',
			},
		],
	};

	methods = {
		loadOptions: {
			getCampaigns,
		},
	};

	webhookMethods = {
		default: {
			async checkExists(this: IHookFunctions): Promise<boolean> {
				const staticData = this.getWorkflowStaticData('node') as TriggerStaticData;
				if (!staticData.subscriptionId) return false;
				const list = await call.call(this, listSubscriptions());
				const state = standing(staticData, list, wantedSubscription(this));
				if (state === 'current') return true;
				if (state === 'outdated') {
					await call.call(this, deleteSubscription(staticData.subscriptionId), { alsoAccepted: [404] });
				}
				forget(staticData);
				return false;
			},

			async create(this: IHookFunctions): Promise<boolean> {
				const staticData = this.getWorkflowStaticData('node') as TriggerStaticData;
				const wanted = wantedSubscription(this);
				const workflow = this.getWorkflow();
				let request;
				try {
					request = createSubscription({
						...wanted,
						description: `n8n workflow "${workflow.name ?? workflow.id}", node "${this.getNode().name}"`,
					});
				} catch (error) {
					if (error instanceof RequestInputError) throw new NodeOperationError(this.getNode(), error.message);
					throw error;
				}
				const answer = await call.call(this, request);
				remember(staticData, createdSubscription(answer), wanted);
				return true;
			},

			async delete(this: IHookFunctions): Promise<boolean> {
				const staticData = this.getWorkflowStaticData('node') as TriggerStaticData;
				if (!staticData.subscriptionId) return true;
				try {
					// 404: already gone on the worker, which is what deleting wants.
					await call.call(this, deleteSubscription(staticData.subscriptionId), { alsoAccepted: [404] });
				} catch {
					return false;
				}
				forget(staticData);
				return true;
			},
		},
	};

	async webhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
		const staticData = this.getWorkflowStaticData('node') as TriggerStaticData;
		const request = this.getRequestObject() as unknown as DeliveryRequest;
		const rawBody = await rawBodyOf(request);
		const minutes = Number(this.getNodeParameter('dedupeMinutes', DEFAULT_DEDUPE_MINUTES));
		const dedupe =
			minutes > 0 ? { seen: staticData.seen ?? {}, now: Date.now(), windowMs: minutes * 60_000 } : undefined;

		const receipt = receive(staticData.secret, rawBody, request.headers ?? this.getHeaderData(), dedupe);
		if (!receipt.accepted) {
			const response = this.getResponseObject();
			response.writeHead(receipt.status, { 'Content-Type': 'application/json' });
			response.end(JSON.stringify({ error: receipt.reason }));
			return { noWebhookResponse: true };
		}
		if (receipt.seen !== undefined) staticData.seen = receipt.seen;
		if (receipt.events.length === 0) {
			// Answered 200 so the worker records the repeat as delivered; no execution starts.
			return { webhookResponse: { received: 0, duplicates: receipt.duplicates } };
		}
		return { workflowData: [this.helpers.returnJsonArray(receipt.events as IDataObject[])] };
	}
}

function wantedSubscription(context: IHookFunctions): WantedSubscription {
	const url = context.getNodeWebhookUrl('default');
	if (!url) {
		throw new NodeOperationError(context.getNode(), 'n8n gave this trigger no webhook URL to subscribe with');
	}
	const campaigns = context.getNodeParameter('campaigns', []) as string[];
	return { url, campaigns: campaigns.map(String) };
}
