import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { OrderInputError, orderFromFields, orderFromItem, ordersFromJson } from '../nodes/shared/orders';

const ORDER = { contactID: 'C-1', orderReference: 'ORD-1', orderDate: '2026-02-21T08:30:00Z', total: '149.90' };

describe('orderFromItem', () => {
	test("keeps the API's fields and leaves out the rest of the item", () => {
		assert.deepEqual(orderFromItem({ ...ORDER, email: 'a@example.com', shopId: 7, lineItems: [] }), {
			...ORDER,
			email: 'a@example.com',
		});
	});
});

describe('orderFromFields', () => {
	test('sends optional fields only when filled', () => {
		assert.deepEqual(orderFromFields({ ...ORDER, email: '', name: 'Zoë', status: undefined }), { ...ORDER, name: 'Zoë' });
	});

	test('refuses a missing required field', () => {
		assert.throws(() => orderFromFields({ ...ORDER, total: ' ' }), OrderInputError);
	});
});

describe('ordersFromJson', () => {
	test('one order object', () => {
		assert.deepEqual(ordersFromJson(JSON.stringify(ORDER)), [ORDER]);
	});

	test('a list of orders, parsed or as text', () => {
		assert.deepEqual(ordersFromJson([ORDER, ORDER]), [ORDER, ORDER]);
		assert.deepEqual(ordersFromJson(JSON.stringify([ORDER])), [ORDER]);
	});

	test('{"orders": [...]}', () => {
		assert.deepEqual(ordersFromJson({ orders: [ORDER] }), [ORDER]);
	});

	test('refuses text that is not JSON, and lists of non-objects', () => {
		assert.throws(() => ordersFromJson('{nope'), OrderInputError);
		assert.throws(() => ordersFromJson([ORDER, 3]), OrderInputError);
		assert.throws(() => ordersFromJson('"text"'), OrderInputError);
	});
});
