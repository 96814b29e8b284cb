/**
 * `npm run build` compiles incrementally. TypeScript trusts its saved build
 * state and emits nothing when the state says the sources did not change, so
 * the state must live inside the output directory: deleting `dist/` (the
 * usual clean rebuild) then deletes it too, and the next build emits all.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../dev/run-cli.js';

interface BuildOptions {
  outDir?: string;
  incremental?: boolean;
  tsBuildInfoFile?: string;
}

async function compilerOptions(config: string): Promise<BuildOptions> {
  const own = JSON.parse(await readFile(path.join(ROOT, config), 'utf8')) as { extends?: string; compilerOptions?: BuildOptions };
  const base = own.extends ? await compilerOptions(path.join(path.dirname(config), own.extends)) : {};
  return { ...base, ...own.compilerOptions };
}

describe('the build state', () => {
  for (const config of ['tsconfig.build.json', 'packages/client/tsconfig.json']) {
    it(`of ${config} is kept inside its output directory`, async () => {
      const options = await compilerOptions(config);
      expect(options.incremental).toBe(true);
      const dir = path.join(ROOT, path.dirname(config));
      const outDir = path.resolve(dir, options.outDir ?? '');
      const state = path.resolve(dir, options.tsBuildInfoFile ?? '');
      const inside = path.relative(outDir, state);
      expect(inside === '' || inside.startsWith('..') || path.isAbsolute(inside), `${state} is outside ${outDir}`).toBe(false);
    });
  }
});
