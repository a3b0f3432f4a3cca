import type {
	IDataObject,
	IExecuteFunctions,
	INodeExecutionData,
	INodeProperties,
	INodeType,
	INodeTypeDescription,
} from 'n8n-workflow';
import { NodeConnectionTypes, NodeOperationError } from 'n8n-workflow';

import { rows, unwrapped } from '../shared/answers';
import { getCampaignsOrAll, getPurchaseFrequencies, getSegments } from '../shared/choices';
import { OrderInputError, orderFromFields, orderFromItem, ordersFromJson, type Order } from '../shared/orders';
import { collectPages, PaginationError } from '../shared/pagination';
import {
	CUSTOMER_SORTS,
	MAX_PAGE_SIZE,
	RequestInputError,
	createOrders,
	getCustomer,
	listCustomers,
	replayDeadEvents,
	replayEvent,
	segmentSummary,
	type ApiRequest,
	type CustomerFilters,
} from '../shared/requests';
import { call } from '../shared/transport';


/**
 * The worker's API as actions: customers (one, or a filtered list over every page), orders (one POST for all the
 * input), the segment summary, and replaying events.
 */
/** The `asOf` option: a moment the worker classifies at instead of now. */
function asOfOption(description: string): INodeProperties {
	return {
		displayName: 'As Of',
		name: 'asOf',
		type: 'string',
		default: '',
		placeholder: '2026-02-21 or 2026-02-21T08:30:00Z',
		description,
	};
}

export class SegmentWorker implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Segment Worker',
		name: 'segmentWorker',
		icon: 'file:segmentWorker.svg',
		group: ['transform'],
		version: 1,
		subtitle: '={{ $parameter["operation"] + ": " + $parameter["resource"] }}',
		description: 'Read customer segments, push orders and replay events on a segment-worker',
		defaults: {
			name: 'Segment Worker',
		},
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [
			{
				name: 'segmentWorkerApi',
				required: true,
			},
		],
		properties: [
			{
				displayName: 'Resource',
				name: 'resource',
				type: 'options',
				noDataExpression: true,
				options: [
					{ name: 'Customer', value: 'customer' },
					{ name: 'Event', value: 'event' },
					{ name: 'Order', value: 'order' },
					{ name: 'Segment', value: 'segment' },
				],
				default: 'customer',
			},

			// --- customer -----------------------------------------------------------------------------------
			{
				displayName: 'Operation',
				name: 'operation',
				type: 'options',
				noDataExpression: true,
				displayOptions: { show: { resource: ['customer'] } },
				options: [
					{
						name: 'Get',
						value: 'get',
						action: 'Get a customer',
						description: 'One customer with its segment and metrics',
					},
					{
						name: 'Get Many',
						value: 'getAll',
						action: 'Get many customers',
						description: 'Customers by segment and purchase frequency',
					},
				],
				default: 'get',
			},
			{
				displayName: 'Contact ID',
				name: 'contactId',
				type: 'string',
				required: true,
				default: '',
				placeholder: 'C-1042',
				displayOptions: { show: { resource: ['customer'], operation: ['get'] } },
				description: "The customer's contactID",
			},
			{
				displayName: 'Return All',
				name: 'returnAll',
				type: 'boolean',
				default: false,
				displayOptions: { show: { resource: ['customer'], operation: ['getAll'] } },
				description: 'Whether to return all results or only up to a given limit',
			},
			{
				displayName: 'Limit',
				name: 'limit',
				type: 'number',
				typeOptions: { minValue: 1 },
				default: 50,
				displayOptions: { show: { resource: ['customer'], operation: ['getAll'], returnAll: [false] } },
				description: 'Max number of results to return',
			},
			{
				displayName: 'Filters',
				name: 'filters',
				type: 'collection',
				placeholder: 'Add Filter',
				default: {},
				displayOptions: { show: { resource: ['customer'], operation: ['getAll'] } },
				options: [
					asOfOption('Classify at this moment instead of now (reads every customer: slower)'),
					{
						displayName: 'Purchase Frequency Name or ID',
						name: 'purchaseFrequency',
						type: 'options',
						typeOptions: { loadOptionsMethod: 'getPurchaseFrequencies' },
						default: '',
						description:
							'Choose from the list (the bands of the worker\'s rules.yaml), or specify a name using an <a href="https://docs.n8n.io/code/expressions/">expression</a>',
					},
					{
						displayName: 'Segment Name or ID',
						name: 'segment',
						type: 'options',
						typeOptions: { loadOptionsMethod: 'getSegments' },
						default: '',
						description:
							'Choose from the list, or specify a segment name using an <a href="https://docs.n8n.io/code/expressions/">expression</a>',
					},
					{
						displayName: 'Sort',
						name: 'sort',
						type: 'options',
						options: CUSTOMER_SORTS.map((sort) => ({
							name: sort.startsWith('-') ? `${sort.slice(1)} (Descending)` : sort,
							value: sort,
						})),
						default: 'contactID',
					},
				],
			},
			{
				displayName: 'Options',
				name: 'options',
				type: 'collection',
				placeholder: 'Add Option',
				default: {},
				displayOptions: {
					show: { resource: ['customer', 'segment'], operation: ['get', 'getSummary'] },
				},
				options: [
					asOfOption('Evaluate at this moment instead of now'),
				],
			},

			// --- order --------------------------------------------------------------------------------------
			{
				displayName: 'Operation',
				name: 'operation',
				type: 'options',
				noDataExpression: true,
				displayOptions: { show: { resource: ['order'] } },
				options: [
					{
						name: 'Create',
						value: 'create',
						action: 'Create orders',
						description:
							'Send the orders of all input items in one request: stored all or none, customers re-evaluated at once',
					},
				],
				default: 'create',
			},
			{
				displayName: 'Orders From',
				name: 'source',
				type: 'options',
				noDataExpression: true,
				displayOptions: { show: { resource: ['order'], operation: ['create'] } },
				options: [
					{
						name: 'Input Items',
						value: 'inputItems',
						description:
							'Each input item is one order: its contactID, orderReference, orderDate, total, email, name, status fields',
					},
					{
						name: 'Fields Below',
						value: 'fields',
						description: 'Map the order fields for each input item',
					},
					{
						name: 'JSON',
						value: 'json',
						description: 'A JSON order, a list of orders, or {"orders": [...]} for each input item',
					},
				],
				default: 'inputItems',
			},
			{
				displayName: 'Contact ID',
				name: 'contactID',
				type: 'string',
				required: true,
				default: '',
				displayOptions: { show: { resource: ['order'], operation: ['create'], source: ['fields'] } },
			},
			{
				displayName: 'Order Reference',
				name: 'orderReference',
				type: 'string',
				required: true,
				default: '',
				description: 'Sending the same reference again updates that order instead of adding one',
				displayOptions: { show: { resource: ['order'], operation: ['create'], source: ['fields'] } },
			},
			{
				displayName: 'Order Date',
				name: 'orderDate',
				type: 'string',
				required: true,
				default: '',
				placeholder: '2026-02-21T08:30:00Z',
				description: 'ISO 8601, with its time zone',
				displayOptions: { show: { resource: ['order'], operation: ['create'], source: ['fields'] } },
			},
			{
				displayName: 'Total',
				name: 'total',
				type: 'string',
				required: true,
				default: '',
				placeholder: '149.90',
				description: 'A decimal amount with at most two decimals (text keeps it exact)',
				displayOptions: { show: { resource: ['order'], operation: ['create'], source: ['fields'] } },
			},
			{
				displayName: 'Additional Fields',
				name: 'additionalFields',
				type: 'collection',
				placeholder: 'Add Field',
				default: {},
				displayOptions: { show: { resource: ['order'], operation: ['create'], source: ['fields'] } },
				options: [
					{ displayName: 'Email', name: 'email', type: 'string', placeholder: 'name@email.com', default: '' },
					{ displayName: 'Name', name: 'name', type: 'string', default: '' },
					{
						displayName: 'Status',
						name: 'status',
						type: 'string',
						default: '',
						placeholder: 'cancelled',
						description: 'Cancelled, refunded and void orders do not count (rules.yaml orders.exclude_statuses)',
					},
				],
			},
			{
				displayName: 'Orders (JSON)',
				name: 'ordersJson',
				type: 'json',
				required: true,
				default: '[]',
				displayOptions: { show: { resource: ['order'], operation: ['create'], source: ['json'] } },
			},

			// --- segment ------------------------------------------------------------------------------------
			{
				displayName: 'Operation',
				name: 'operation',
				type: 'options',
				noDataExpression: true,
				displayOptions: { show: { resource: ['segment'] } },
				options: [
					{
						name: 'Get Summary',
						value: 'getSummary',
						action: 'Get the segment summary',
						description: 'Customers and spend per segment: one item per segment',
					},
				],
				default: 'getSummary',
			},

			// --- event --------------------------------------------------------------------------------------
			{
				displayName: 'Operation',
				name: 'operation',
				type: 'options',
				noDataExpression: true,
				displayOptions: { show: { resource: ['event'] } },
				options: [
					{
						name: 'Replay',
						value: 'replay',
						action: 'Replay an event',
						description: 'Send one event again (a superseded one without its re-check)',
					},
					{
						name: 'Replay Dead Events',
						value: 'replayDead',
						action: 'Replay dead events',
						description: 'Queue the dead events of a campaign (or of all) for delivery again',
					},
				],
				default: 'replay',
			},
			{
				displayName: 'Event ID',
				name: 'eventId',
				type: 'string',
				required: true,
				default: '',
				placeholder: 'evt_c1a9726df9fa3053bc0196166a',
				displayOptions: { show: { resource: ['event'], operation: ['replay'] } },
			},
			{
				displayName: 'Campaign Name or ID',
				name: 'campaign',
				type: 'options',
				typeOptions: { loadOptionsMethod: 'getCampaignsOrAll' },
				default: '',
				displayOptions: { show: { resource: ['event'], operation: ['replayDead'] } },
				description:
					'Choose from the list, or specify a campaign name using an <a href="https://docs.n8n.io/code/expressions/">expression</a>',
			},
			{
				displayName: 'Limit',
				name: 'replayLimit',
				type: 'number',
				typeOptions: { minValue: 0, maxValue: 1000 },
				default: 0,
				displayOptions: { show: { resource: ['event'], operation: ['replayDead'] } },
				description:
					'At most this many dead events per run (0: the worker\'s maximum, 1000); the answer says how many remain',
			},
		],
	};

	methods = {
		loadOptions: {
			getCampaignsOrAll,
			getSegments,
			getPurchaseFrequencies,
		},
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const resource = this.getNodeParameter('resource', 0) as string;
		const operation = this.getNodeParameter('operation', 0) as string;

		if (resource === 'order' && operation === 'create') {
			return [await createOrdersOnce(this, items)];
		}

		const output: INodeExecutionData[] = [];
		for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
			try {
				const results = await runForItem(this, resource, operation, itemIndex);
				output.push(...results.map((json) => ({ json: json as IDataObject, pairedItem: { item: itemIndex } })));
			} catch (error) {
				if (!this.continueOnFail()) throw asNodeError(this, error, itemIndex);
				output.push({ json: { error: (error as Error).message }, pairedItem: { item: itemIndex } });
			}
		}
		return [output];
	}
}

async function runForItem(
	context: IExecuteFunctions,
	resource: string,
	operation: string,
	itemIndex: number,
): Promise<Record<string, unknown>[]> {
	const send = async (request: ApiRequest) => await call.call(context, request, { itemIndex });
	const param = <T>(name: string, fallback?: T) => context.getNodeParameter(name, itemIndex, fallback) as T;

	if (resource === 'customer' && operation === 'get') {
		const options = param<{ asOf?: string }>('options', {});
		return [unwrapped(await send(getCustomer(param<string>('contactId'), options.asOf)))];
	}
	if (resource === 'customer' && operation === 'getAll') {
		const filters = param<CustomerFilters>('filters', {});
		const limit = param<boolean>('returnAll', false) ? undefined : param<number>('limit', 50);
		return await collectPages(
			async (cursor, pageSize) => {
				const body = await send(listCustomers(filters, pageSize, cursor));
				const nextCursor = (body as { nextCursor?: string | null } | null)?.nextCursor ?? null;
				return { data: rows(body), nextCursor };
			},
			MAX_PAGE_SIZE,
			limit,
		);
	}
	if (resource === 'segment' && operation === 'getSummary') {
		const options = param<{ asOf?: string }>('options', {});
		const body = await send(segmentSummary(options.asOf));
		const asOf = (body as { asOf?: string } | null)?.asOf;
		return rows(body).map((row) => ({ ...row, asOf }));
	}
	if (resource === 'event' && operation === 'replay') {
		return [unwrapped(await send(replayEvent(param<string>('eventId'))))];
	}
	if (resource === 'event' && operation === 'replayDead') {
		const body = await send(replayDeadEvents(param<string>('campaign', ''), param<number>('replayLimit', 0)));
		return [unwrapped(body)];
	}
	throw new NodeOperationError(context.getNode(), `unknown operation '${operation}' of '${resource}'`, { itemIndex });
}

/** All the input's orders in one POST: the API stores all or none, so one answer covers every item. */
async function createOrdersOnce(context: IExecuteFunctions, items: INodeExecutionData[]): Promise<INodeExecutionData[]> {
	const orders: Order[] = [];
	for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
		try {
			orders.push(...ordersOfItem(context, items[itemIndex], itemIndex));
		} catch (error) {
			throw asNodeError(context, error, itemIndex);
		}
	}
	const pairedItem = items.map((_, item) => ({ item }));
	try {
		const body = await call.call(context, createOrders(orders));
		return [{ json: unwrapped(body) as IDataObject, pairedItem }];
	} catch (error) {
		if (!context.continueOnFail()) throw asNodeError(context, error);
		return [{ json: { error: (error as Error).message }, pairedItem }];
	}
}

function ordersOfItem(context: IExecuteFunctions, item: INodeExecutionData, itemIndex: number): Order[] {
	const source = context.getNodeParameter('source', itemIndex) as string;
	if (source === 'inputItems') return [orderFromItem(item.json)];
	if (source === 'json') return ordersFromJson(context.getNodeParameter('ordersJson', itemIndex));
	const fields: Record<string, unknown> = {
		...(context.getNodeParameter('additionalFields', itemIndex, {}) as IDataObject),
	};
	for (const name of ['contactID', 'orderReference', 'orderDate', 'total']) {
		fields[name] = context.getNodeParameter(name, itemIndex);
	}
	return [orderFromFields(fields)];
}

/** The plain modules' input errors as node errors naming the item; API errors are node errors already. */
function asNodeError(context: IExecuteFunctions, error: unknown, itemIndex?: number): Error {
	if (error instanceof RequestInputError || error instanceof OrderInputError || error instanceof PaginationError) {
		return new NodeOperationError(context.getNode(), error.message, { itemIndex });
	}
	return error as Error;
}
