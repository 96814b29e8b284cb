import type { Context } from 'hono';

/** One thing /readyz checks; it rejects with a reason an operator can act on. */
export interface ReadinessCheck {
  name: string;
  check(): Promise<void>;
}

export function createHealthHandlers(checks: ReadinessCheck[]) {
  return {
    /** 200 while the process serves. */
    healthz(c: Context): Response {
      return c.json({ status: 'ok' });
    },

    /** 200 when every dependency answers, else 503 naming what failed. */
    async readyz(c: Context): Promise<Response> {
      const results = await Promise.all(
        checks.map(async ({ name, check }) => {
          try {
            await check();
            return undefined;
          } catch (error) {
            return `${name}: ${error instanceof Error ? error.message : String(error)}`;
          }
        }),
      );
      const failures = results.filter((result): result is string => result !== undefined);
      if (failures.length === 0) return c.json({ status: 'ready' });
      return c.json({ error: 'Service Unavailable', message: failures.join('; ') }, 503);
    },
  };
}
