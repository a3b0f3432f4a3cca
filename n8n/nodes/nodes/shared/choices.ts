/**
 * The lists the node editors offer, loaded from the worker with the node's credential.
 */

import type { ILoadOptionsFunctions, INodePropertyOptions } from 'n8n-workflow';

import { campaignChoices, frequencyChoices, segmentChoices } from './answers';
import { listCampaigns, openApiDocument, segmentSummary } from './requests';
import { call } from './transport';

export async function getCampaigns(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
	return campaignChoices(await call.call(this, listCampaigns()));
}

/** The campaigns, after a first choice meaning every campaign (sent as no campaign at all). */
export async function getCampaignsOrAll(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
	return [{ name: 'All Campaigns', value: '' }, ...campaignChoices(await call.call(this, listCampaigns()))];
}

export async function getSegments(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
	return segmentChoices(await call.call(this, segmentSummary()));
}

/** The purchase frequencies of the worker's rules (renamed or added bands included). */
export async function getPurchaseFrequencies(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
	return frequencyChoices(await call.call(this, openApiDocument()));
}
