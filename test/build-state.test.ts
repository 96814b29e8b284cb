/**
 * `npm run build` compiles incrementally. TypeScript trusts its saved build
 * state and emits nothing when the state says the sources did not change, so
 * the state must live inside the output directory: deleting `dist/` (the
 * usual clean rebuild) then deletes it too, and the next build emits all.
 * And the command it builds must be executable.
 */
import { readFile, stat } from 'node:fs/promises';
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

describe('the built command', () => {
  it('is executable, so `npx recording-gateway` runs it (npm does not always mark a bin the build writes after install)', async () => {
    const { bin } = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    const command = bin['recording-gateway'];
    expect(command).toBe('dist/cli.js');
    const { mode } = await stat(path.join(ROOT, command!));
    expect(mode & 0o111, `${command} mode ${mode.toString(8)}`).toBe(0o111);
  });
});
