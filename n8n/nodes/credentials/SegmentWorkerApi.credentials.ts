import type {
	IAuthenticateGeneric,
	ICredentialTestRequest,
	ICredentialType,
	INodeProperties,
} from 'n8n-workflow';

/** The worker's address and an API key, sent as `Authorization: Bearer <key>` on every request. */
export class SegmentWorkerApi implements ICredentialType {
	name = 'segmentWorkerApi';

	displayName = 'Segment Worker API';

	icon = 'file:segmentWorker.svg' as const;

	properties: INodeProperties[] = [
		{
			displayName: 'Base URL',
			name: 'baseUrl',
			type: 'string',
			default: 'http://localhost:8000',
			placeholder: 'https://segments.example.com',
			description: "The worker's address, without /api (the worker listens on PORT, 8000 by default)",
			required: true,
		},
		{
			displayName: 'API Key',
			name: 'apiKey',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description:
				'A key from API_KEYS reads customers, segments and campaigns. Creating orders, replaying events and the trigger (which subscribes itself) need a key from ADMIN_API_KEYS.',
			required: true,
		},
	];

	authenticate: IAuthenticateGeneric = {
		type: 'generic',
		properties: {
			headers: {
				Authorization: '=Bearer {{$credentials.apiKey}}',
			},
		},
	};

	// A keyed read: a wrong key answers 401, a wrong URL does not answer.
	test: ICredentialTestRequest = {
		request: {
			baseURL: '={{$credentials.baseUrl}}',
			url: '/api/campaigns',
		},
	};
}
