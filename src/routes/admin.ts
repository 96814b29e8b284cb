import type { Context } from 'hono';
import type { AdminPurgeAudit } from '../audit/audit-event.js';
import { bearerToken, refusedCredential } from '../auth/bearer.js';
import { constantTimeEqual } from '../auth/constant-time.js';
import { redeemLocalGrant } from '../auth/local-grant.js';
import type { Tenant, TenantRegistry } from '../auth/tenants.js';
import { cacheKey, type RecordingMeta } from '../cache/recording-meta.js';
import { BadRequestError, UnauthorizedError } from '../errors.js';
import { CALL_ID_RULE, isCanonicalCallId } from '../recordings/call-id.js';
import type { GatewayEnv } from './gateway-env.js';

/*
 * POST /admin/cache/purge, which `recording-gateway cache purge` calls so that
 * a purge reaches the running gateway's memory at once.
 *
 * Who may call it: the holder of ADMIN_TOKEN, or a process that can write to
 * the cache directory. The latter leaves a one-time grant there (an empty file
 * named by the sha256 of a random token) and presents the token. Such a
 * process can delete the cached files anyway, so the grant gives it nothing
 * more, and it works in the default configuration, without an admin token,
 * without trusting the network: a loopback check would also let in every
 * client of a reverse proxy on the same host.
 */

/** Recordings removed at once: enough to overlap disk and index, few enough to leave room for requests. */
const PURGE_CONCURRENCY = 16;

export interface AdminRoutesDeps {
  adminToken: string | undefined;
  tenants: TenantRegistry;
  /** The cache directory, where local grants are left. */
  cacheDir: string;
  /** Every recording the index lists. */
  stored(): AsyncIterable<[string, RecordingMeta]>;
  /**
   * The keys in `namespace` (all, without one) a purge must reach that the
   * index may not list: copies in memory, downloads under way, remembered
   * 404s, other replicas' copies.
   */
  unlisted(namespace: string | undefined): AsyncIterable<string>;
  /**
   * Removes one recording from every tier; a download of it under way is not
   * stored. May answer whether there was a copy.
   */
  purge(namespace: string, callId: string): Promise<unknown>;
  /**
   * Records a purge of a whole namespace (everything, without one) before any
   * recording is removed, so that a download in another process sharing the
   * index is not stored either, of a recording this process never heard of.
   */
  markPurged(namespace: string | undefined): Promise<void>;
}

/** How the caller was let in, for the audit line. */
async function authorize(c: Context, deps: AdminRoutesDeps): Promise<'admin-token' | 'local-grant'> {
  const authorization = c.req.header('authorization');
  if (!authorization) throw new UnauthorizedError('missing', 'Missing credentials: send Authorization: Bearer <admin token>');
  const token = bearerToken(authorization);
  if (token !== undefined && deps.adminToken !== undefined && constantTimeEqual(token, deps.adminToken)) return 'admin-token';
  if (token !== undefined && (await redeemLocalGrant(deps.cacheDir, token))) return 'local-grant';
  throw new UnauthorizedError(token === undefined ? refusedCredential(authorization) : 'invalid');
}

/** A body field, checked: its value, or why it is refused; undefined when absent. */
type Checked<T> = { value: T } | { refused: BadRequestError } | undefined;

function checkCallId(raw: unknown): Checked<string> {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' && typeof raw !== 'number') return { refused: new BadRequestError('call_id must be a string or a number') };
  const callId = String(raw);
  return isCanonicalCallId(callId) ? { value: callId } : { refused: new BadRequestError(CALL_ID_RULE) };
}

function checkTenant(raw: unknown, tenants: TenantRegistry): Checked<Tenant> {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string') return { refused: new BadRequestError('tenant must be a string, a tenant id of the config') };
  const tenant = tenants.byId(raw);
  return tenant ? { value: tenant } : { refused: new BadRequestError(`No tenant ${JSON.stringify(raw)} in the gateway's config`) };
}

function acceptedValue<T>(field: Checked<T>): T | undefined {
  if (field && 'refused' in field) throw field.refused;
  return field?.value;
}

/**
 * The request body, `{"call_id"?, "tenant"?, "all"?}`, checked. What it
 * names validly is noted in `named` first, for the audit line: a request
 * refused for another of its fields still says which recordings it was
 * after, not `null` (which reads as every tenant).
 */
async function purgeFilter(c: Context, tenants: TenantRegistry, named: AdminPurgeAudit): Promise<{ callId?: string; namespace?: string }> {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new BadRequestError('Expected a JSON body: {"call_id": N}, {"tenant": "T"}, both, or {"all": true}');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequestError('Expected a JSON object');
  const { call_id: rawCallId, tenant: tenantId, all, ...rest } = body as Record<string, unknown>;
  const call = checkCallId(rawCallId);
  const tenant = checkTenant(tenantId, tenants);
  if (call && 'value' in call) named.callId = call.value;
  if (tenant && 'value' in tenant) named.tenant = tenant.value.id;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw new BadRequestError(`Unknown field ${JSON.stringify(unknown[0])}: expected call_id, tenant or all`);
  if (all !== undefined && all !== true) throw new BadRequestError('"all" must be true when given');
  if (all === true && (call || tenant)) throw new BadRequestError('"all" purges everything: leave out call_id and tenant');
  if (all !== true && !call && !tenant) throw new BadRequestError('Name a call_id, a tenant or both; {"all": true} purges everything');
  const callId = acceptedValue(call);
  const namespace = acceptedValue(tenant)?.namespace;
  return { ...(callId === undefined ? {} : { callId }), ...(namespace === undefined ? {} : { namespace }) };
}

/** POST /admin/cache/purge: removes the matching recordings from every tier; answers `{"purged": n}`. */
export function createAdminPurgeHandler(deps: AdminRoutesDeps) {
  return async function adminPurge(c: Context<GatewayEnv>): Promise<Response> {
    const audit: AdminPurgeAudit = { credential: await authorize(c, deps) };
    c.set('adminPurge', audit);
    const { callId, namespace } = await purgeFilter(c, deps.tenants, audit);
    // A purge of one call id is recorded per recording by `purge` below.
    if (callId === undefined) await deps.markPurged(namespace);
    const targets = new Map<string, { namespace: string; callId: string; listed: boolean }>();
    for await (const [key, meta] of deps.stored()) {
      if ((namespace === undefined || meta.namespace === namespace) && (callId === undefined || meta.callId === callId)) {
        targets.set(key, { namespace: meta.namespace, callId: meta.callId, listed: true });
      }
    }
    // Also what the index does not list: a copy held in memory only, a download under way, a remembered 404, another volume's copy.
    if (callId !== undefined) {
      const namespaces = namespace === undefined ? deps.tenants.all.map((tenant) => tenant.namespace) : [namespace];
      for (const candidate of namespaces) {
        const key = cacheKey(candidate, callId);
        if (!targets.has(key)) targets.set(key, { namespace: candidate, callId, listed: false });
      }
    } else {
      for await (const key of deps.unlisted(namespace)) {
        const slash = key.lastIndexOf('/');
        if (slash > 0 && !targets.has(key))
          targets.set(key, { namespace: key.slice(0, slash), callId: key.slice(slash + 1), listed: false });
      }
    }
    let purged = 0;
    const queue = [...targets.values()];
    async function worker(): Promise<void> {
      for (let target = queue.pop(); target !== undefined; target = queue.pop()) {
        try {
          const held = await deps.purge(target.namespace, target.callId);
          if (target.listed || held === true) purged++;
        } catch (error) {
          // The other workers stop too: the caller learns of the failure and may try again.
          queue.length = 0;
          throw error;
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(PURGE_CONCURRENCY, queue.length) }, worker));
    return c.json({ purged }, 200, { 'Cache-Control': 'no-store' });
  };
}
