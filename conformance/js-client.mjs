// The official JavaScript Kubernetes client (npm @kubernetes/client-node >= 2) against a running
// klio-api demo.
//
// Usage: node js-client.mjs KUBECONFIG DEMO_DIR
//   (run by conformance/js-client.sh with the Node and the client it installs; DEMO_DIR is the
//    demo's --dir, whose catalog/tier1 gets one record added and removed again)
//
// Checks CustomObjectsApi list (with selectors and paging) and get, the ApiException of an
// unknown name and of a delete, the generic KubernetesObjectApi (which discovers the resource),
// Watch (from a list's resourceVersion, with bookmarks; and a streaming list: initial events,
// then the initial-events-end bookmark), and an informer (makeInformer) seeing a backup appear
// and disappear. Prints one line per check and `js-client: N passed, M failed`; exits non-zero on
// any failure. The demo's catalog is as it was afterwards.

import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import * as k8s from '@kubernetes/client-node';

const [kubeconfig, demoDir] = process.argv.slice(2);
if (!kubeconfig || !demoDir) {
    console.error('usage: node js-client.mjs KUBECONFIG DEMO_DIR');
    process.exit(2);
}

const GROUP = 'kliocatalog.enterprisedb.io';
const VERSION = 'v1alpha1';
const PLURAL = 'kliobackups';
const PATH = `/apis/${GROUP}/${VERSION}/${PLURAL}`;
const EXAMPLE = 'cluster-example.backup-20251113093137';
const DEMO_NAMES = [
    'cluster-example.backup-20251101020000',
    'cluster-example.backup-20251113093137',
    'cluster-example.backup-20251114093000',
    'pg-analytics.backup-20251120010000',
    'pg-analytics.backup-20251121010000',
    'pg-orders.backup-20251122003000',
];
// The backup the watch and informer checks add and remove.
const NEW_CLUSTER = 'pg-js';
const NEW_BACKUP = 'backup-20251126120000';
const NEW_NAME = `${NEW_CLUSTER}.${NEW_BACKUP}`;
const WAIT_MS = 20_000; // the demo refreshes its catalog every 2 s

const kc = new k8s.KubeConfig();
kc.loadFromFile(kubeconfig);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
const base = { group: GROUP, version: VERSION, plural: PLURAL };

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

function eq(actual, expected, what) {
    const a = JSON.stringify(actual);
    const e = JSON.stringify(expected);
    if (a !== e) {
        throw new Error(`${what ? `${what}: ` : ''}expected ${e}, got ${a}`);
    }
}

const names = (list) => list.items.map((i) => i.metadata.name);

async function rejects(promise) {
    try {
        await promise;
    } catch (e) {
        return e;
    }
    throw new Error('expected an error, the call succeeded');
}

/** Waits for `predicate` over what `events` holds, polling. */
async function until(what, predicate, ms = WAIT_MS) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
        if (predicate()) {
            return;
        }
        await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** A watch on the collection, collecting its events; `stop()` aborts it. */
async function watchEvents(query) {
    const events = [];
    let ended = null;
    const controller = await new k8s.Watch(kc).watch(
        PATH,
        query,
        (type, object) => events.push({ type, object }),
        (err) => {
            ended = err ?? 'closed';
        },
    );
    return { events, stop: () => controller.abort(), ended: () => ended };
}

/** The demo's catalog: a copy of the example's record under a new cluster and backup ID. */
const catalog = join(demoDir, 'catalog', 'tier1');
const newRecordFile = join(catalog, NEW_CLUSTER, `${NEW_BACKUP}.json`);
function addBackup() {
    const record = JSON.parse(readFileSync(join(catalog, 'cluster-example', 'backup-20251113093137.json'), 'utf8'));
    record.clusterName = NEW_CLUSTER;
    record.name = NEW_BACKUP;
    mkdirSync(join(catalog, NEW_CLUSTER), { recursive: true });
    // Whole or not at all, for the catalog server's scan: written beside the catalog, renamed in.
    const tmp = join(demoDir, `${NEW_BACKUP}.json.tmp`);
    writeFileSync(tmp, JSON.stringify(record));
    renameSync(tmp, newRecordFile);
}
function removeBackup() {
    // Only the file: removing its directory could race with the catalog server's scan.
    rmSync(newRecordFile, { force: true });
}

check('CustomObjectsApi.listClusterCustomObject lists every backup', async () => {
    const list = await custom.listClusterCustomObject(base);
    eq(list.kind, 'KlioBackupList', 'kind');
    eq(list.apiVersion, `${GROUP}/${VERSION}`, 'apiVersion');
    eq(names(list), DEMO_NAMES, 'names');
    if (!list.metadata.resourceVersion) throw new Error('no metadata.resourceVersion');
});

check('list with a label selector and a field selector', async () => {
    const byLabel = await custom.listClusterCustomObject({
        ...base,
        labelSelector: 'kliocatalog.enterprisedb.io/cluster=pg-analytics',
    });
    eq(names(byLabel), DEMO_NAMES.filter((n) => n.startsWith('pg-analytics.')));
    const byField = await custom.listClusterCustomObject({ ...base, fieldSelector: 'spec.clusterName=pg-orders' });
    eq(names(byField), ['pg-orders.backup-20251122003000']);
});

check('list in pages of 4 (limit, continue)', async () => {
    const first = await custom.listClusterCustomObject({ ...base, limit: 4 });
    eq(names(first), DEMO_NAMES.slice(0, 4), 'first page');
    eq(first.metadata.remainingItemCount, 2, 'remainingItemCount');
    const second = await custom.listClusterCustomObject({ ...base, limit: 4, _continue: first.metadata._continue ?? first.metadata.continue });
    eq(names(second), DEMO_NAMES.slice(4), 'second page');
});

check('CustomObjectsApi.getClusterCustomObject gets the product example', async () => {
    const obj = await custom.getClusterCustomObject({ ...base, name: EXAMPLE });
    eq(obj.kind, 'KlioBackup', 'kind');
    eq(obj.metadata.name, EXAMPLE, 'name');
    eq(obj.spec, { backupID: 'backup-20251113093137', clusterName: 'cluster-example' }, 'spec');
    eq(obj.status.endWAL, '000000010000000000000007', 'status.endWAL');
    eq(obj.status.startLSN, 117440552, 'status.startLSN');
});

check('an unknown name is an ApiException 404 with a NotFound Status', async () => {
    const e = await rejects(custom.getClusterCustomObject({ ...base, name: 'nonexistent' }));
    eq(e.code, 404, 'code');
    const status = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
    eq([status.kind, status.reason, status.code], ['Status', 'NotFound', 404], 'Status');
    eq(status.message, `${PLURAL}.${GROUP} "nonexistent" not found`, 'message');
});

check('a delete is an ApiException 405 (the catalog is read-only)', async () => {
    const e = await rejects(custom.deleteClusterCustomObject({ ...base, name: EXAMPLE }));
    eq(e.code, 405, 'code');
    const after = await custom.listClusterCustomObject(base);
    eq(names(after), DEMO_NAMES, 'nothing deleted');
});

check('KubernetesObjectApi (discovery, then list and read)', async () => {
    const objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    const list = await objects.list(`${GROUP}/${VERSION}`, 'KlioBackup');
    eq(names(list), DEMO_NAMES, 'list');
    const obj = await objects.read({ apiVersion: `${GROUP}/${VERSION}`, kind: 'KlioBackup', metadata: { name: EXAMPLE } });
    eq(obj.metadata.name, EXAMPLE, 'read');
});

check('Watch: a streaming list (sendInitialEvents), then the initial-events-end bookmark', async () => {
    const w = await watchEvents({
        sendInitialEvents: true,
        resourceVersionMatch: 'NotOlderThan',
        allowWatchBookmarks: true,
        timeoutSeconds: 30,
    });
    try {
        await until('the initial events and their bookmark', () => w.events.length >= DEMO_NAMES.length + 1);
        eq(w.events.slice(0, DEMO_NAMES.length).map((e) => [e.type, e.object.metadata.name]), DEMO_NAMES.map((n) => ['ADDED', n]));
        const bookmark = w.events[DEMO_NAMES.length];
        eq(bookmark.type, 'BOOKMARK', 'after the initial events');
        eq(bookmark.object.metadata.annotations, { 'k8s.io/initial-events-end': 'true' }, 'annotations');
        const list = await custom.listClusterCustomObject(base);
        eq(bookmark.object.metadata.resourceVersion, list.metadata.resourceVersion, 'bookmark resourceVersion');
    } finally {
        w.stop();
    }
});

check('Watch from a list resourceVersion, and an informer, see a backup added then deleted', async () => {
    const list = await custom.listClusterCustomObject(base);
    const w = await watchEvents({ resourceVersion: list.metadata.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 60 });
    const informer = k8s.makeInformer(kc, PATH, () => custom.listClusterCustomObject(base));
    const seen = [];
    informer.on('add', (o) => seen.push(['add', o.metadata.name]));
    informer.on('delete', (o) => seen.push(['delete', o.metadata.name]));
    const errors = [];
    informer.on('error', (e) => errors.push(e));
    try {
        await informer.start();
        await until('the informer to have every backup', () => informer.list().length === DEMO_NAMES.length);
        eq(informer.list().map((o) => o.metadata.name).sort(), DEMO_NAMES, 'informer cache');
        eq(informer.get(EXAMPLE)?.spec?.clusterName, 'cluster-example', 'informer get');
        addBackup();
        await until(`${NEW_NAME} in the watch and the informer`, () =>
            w.events.some((e) => e.type === 'ADDED' && e.object.metadata.name === NEW_NAME) &&
            seen.some(([k, n]) => k === 'add' && n === NEW_NAME),
        );
        removeBackup();
        await until(`${NEW_NAME} deleted in the watch and the informer`, () =>
            w.events.some((e) => e.type === 'DELETED' && e.object.metadata.name === NEW_NAME) &&
            seen.some(([k, n]) => k === 'delete' && n === NEW_NAME),
        );
        eq(informer.list().map((o) => o.metadata.name).sort(), DEMO_NAMES, 'informer cache after the deletion');
        const changes = w.events.filter((e) => e.type !== 'BOOKMARK').map((e) => [e.type, e.object.metadata.name]);
        eq(changes, [['ADDED', NEW_NAME], ['DELETED', NEW_NAME]], 'the watch saw the changes, nothing else');
        eq(w.ended(), null, 'the watch is still open');
        eq(errors.map(String), [], 'informer errors');
    } finally {
        removeBackup();
        w.stop();
        await informer.stop();
    }
});

let passed = 0;
let failed = 0;
for (const { name, fn } of checks) {
    const started = Date.now();
    try {
        await fn();
        passed += 1;
        console.log(`PASS ${name} (${Date.now() - started} ms)`);
    } catch (e) {
        failed += 1;
        console.log(`FAIL ${name}: ${e?.stack ?? e}`);
    }
}
console.log(`js-client (@kubernetes/client-node ${process.env.KLIO_JS_CLIENT_VERSION ?? '?'}, Node ${process.version})`);
console.log(`js-client: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
