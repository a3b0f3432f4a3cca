// tsc compiles only TypeScript: the one icon is copied next to each compiled node and credential, where n8n
// resolves `icon: 'file:segmentWorker.svg'`.
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const ICON = path.join(root, 'icons', 'segmentWorker.svg');
const DESTINATIONS = ['dist/nodes/SegmentWorker', 'dist/nodes/SegmentWorkerTrigger', 'dist/credentials'];

for (const destination of DESTINATIONS) {
	fs.mkdirSync(path.join(root, destination), { recursive: true });
	fs.copyFileSync(ICON, path.join(root, destination, path.basename(ICON)));
}
