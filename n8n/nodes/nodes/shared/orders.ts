/**
 * Turning n8n input into the orders POST /api/orders takes: from each input item's JSON, from fields mapped with
 * expressions, or from a JSON value holding one order or a list.
 */

import { isObject } from './events';

export type Order = Record<string, unknown>;

/** The fields the API accepts (worker/ingest.py FIELDS); it refuses any other, and a batch with one bad order. */
export const ORDER_FIELDS = ['contactID', 'orderReference', 'orderDate', 'total', 'email', 'name', 'status'] as const;
export const REQUIRED_ORDER_FIELDS = ['contactID', 'orderReference', 'orderDate', 'total'] as const;

export class OrderInputError extends Error {}

/**
 * The order in an input item: its known fields, others left out (an item from a shop carries many). A missing
 * required field is left to the API, which names the record and the field.
 */
export function orderFromItem(json: Record<string, unknown>): Order {
	const order: Order = {};
	for (const field of ORDER_FIELDS) {
		const value = json[field];
		if (value !== undefined && value !== null && value !== '') order[field] = value;
	}
	return order;
}

/** An order from the node's mapped fields; optional fields left empty are not sent. */
export function orderFromFields(fields: Record<string, unknown>): Order {
	const order: Order = {};
	for (const field of ORDER_FIELDS) {
		const value = typeof fields[field] === 'string' ? (fields[field] as string).trim() : fields[field];
		if (value === undefined || value === null || value === '') {
			if ((REQUIRED_ORDER_FIELDS as readonly string[]).includes(field)) {
				throw new OrderInputError(`${field} is required`);
			}
			continue;
		}
		order[field] = value;
	}
	return order;
}

/**
 * The orders in a JSON value (text or already parsed): one order object, a list of them, or {"orders": [...]},
 * sent as written so that the API's checks see exactly what the user wrote.
 */
export function ordersFromJson(value: unknown): Order[] {
	let parsed = value;
	if (typeof value === 'string') {
		try {
			parsed = JSON.parse(value);
		} catch (error) {
			throw new OrderInputError(`the orders JSON does not parse: ${(error as Error).message}`);
		}
	}
	if (isObject(parsed) && Array.isArray(parsed.orders) && Object.keys(parsed).length === 1) {
		parsed = parsed.orders;
	}
	const orders = Array.isArray(parsed) ? parsed : [parsed];
	const bad = orders.findIndex((order) => !isObject(order));
	if (bad !== -1) {
		throw new OrderInputError(
			Array.isArray(parsed)
				? `order ${bad + 1} of the list is not a JSON object`
				: 'the orders JSON must be an order object, a list of orders, or {"orders": [...]}',
		);
	}
	return orders as Order[];
}
