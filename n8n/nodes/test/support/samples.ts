/** Events shaped as the worker sends them (worker/serialize.py event_body), compact JSON like the worker writes. */

export function sampleEvent(id: string, campaign = 'welcome', name = 'Zoë Sample'): Record<string, unknown> {
	return {
		id,
		type: 'segment.entered',
		campaign,
		occurredAt: '2026-02-21T08:43:00.000Z',
		detectedAt: '2026-02-21T09:30:00.000Z',
		transition: { from: null, to: 'New' },
		customer: {
			contactID: `C-${id}`,
			name,
			email: `${id}@example.com`,
			metrics: { orderCount: 1, totalSpend: '320.00', segment: 'New', purchaseFrequency: 'One-time' },
			experiments: {},
		},
		rulesVersion: 'sha256:ffc57a27',
	};
}

export function compact(value: unknown): string {
	return JSON.stringify(value);
}

export function batchBody(events: Record<string, unknown>[]): string {
	return `{"events":[${events.map(compact).join(',')}]}`;
}
