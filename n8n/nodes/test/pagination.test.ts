import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { collectPages, PaginationError, type Page } from '../nodes/shared/pagination';

/** Pages of `pages`, by cursor 'p1', 'p2', ...; records each (cursor, pageSize) asked for. */
function pager(pages: number[][]) {
	const asked: Array<[string | undefined, number]> = [];
	const fetch = async (cursor: string | undefined, pageSize: number): Promise<Page<number>> => {
		asked.push([cursor, pageSize]);
		const index = cursor === undefined ? 0 : Number(cursor.slice(1));
		return { data: pages[index], nextCursor: index + 1 < pages.length ? `p${index + 1}` : null };
	};
	return { fetch, asked };
}

describe('collectPages', () => {
	test('return all: follows nextCursor to the end with the largest pages', async () => {
		const { fetch, asked } = pager([[1, 2], [3, 4], [5]]);
		assert.deepEqual(await collectPages(fetch, 1000), [1, 2, 3, 4, 5]);
		assert.deepEqual(asked, [[undefined, 1000], ['p1', 1000], ['p2', 1000]]);
	});

	test('a limit stops as soon as enough rows are in, and asks for no more than it needs', async () => {
		const { fetch, asked } = pager([[1, 2], [3, 4], [5]]);
		assert.deepEqual(await collectPages(fetch, 2, 3), [1, 2, 3]);
		assert.deepEqual(asked, [[undefined, 2], ['p1', 1]]);
	});

	test('a short page is not the end while a cursor follows', async () => {
		const { fetch } = pager([[1], [], [2, 3]]);
		assert.deepEqual(await collectPages(fetch, 3, 3), [1, 2, 3]);
	});

	test('a limit larger than the list gives the whole list', async () => {
		const { fetch } = pager([[1, 2], [3]]);
		assert.deepEqual(await collectPages(fetch, 2, 50), [1, 2, 3]);
	});

	test('stops with an error when a cursor comes back', async () => {
		const loop = async (): Promise<Page<number>> => ({ data: [1], nextCursor: 'same' });
		await assert.rejects(collectPages(loop, 10), PaginationError);
	});

	test('refuses a page without data', async () => {
		const broken = async () => ({ nextCursor: null }) as unknown as Page<number>;
		await assert.rejects(collectPages(broken, 10), PaginationError);
	});
});
