/** The admin purge route, shared by the route and the CLI that calls it. */
export const ADMIN_PURGE_PATH = '/admin/cache/purge';

/** What a purge removes: one call, one tenant's namespace, both, or (`all`) everything. */
export interface PurgeFilter {
  callId?: string;
  tenant?: string;
  all?: boolean;
}
