import { describe, expect, it } from 'vitest';
import { RequestCounts } from '../../src/metrics/request-counts.js';

const probe = { route: 'recording', method: 'GET', status: 206, tenant: 'acme', cache: 'hit' };

describe('RequestCounts', () => {
  it('counts each label set apart, a label differing at any level making a new set', () => {
    const counts = new RequestCounts();
    for (let n = 0; n < 3; n++) counts.add({ ...probe });
    counts.add({ ...probe, route: 'webhook' });
    counts.add({ ...probe, method: 'HEAD' });
    counts.add({ ...probe, status: 200 });
    counts.add({ ...probe, tenant: 'globex' });
    counts.add({ ...probe, cache: 'miss' });
    counts.add({ ...probe, status: 200 });
    expect(counts.all().map(({ labels, count }) => [labels, count])).toEqual([
      [{ ...probe, status: '206' }, 3],
      [{ ...probe, route: 'webhook', status: '206' }, 1],
      [{ ...probe, method: 'HEAD', status: '206' }, 1],
      [{ ...probe, status: '200' }, 2],
      [{ ...probe, tenant: 'globex', status: '206' }, 1],
      [{ ...probe, cache: 'miss', status: '206' }, 1],
    ]);
  });

  it('keeps the labels it was first given, not a caller object changed later', () => {
    const counts = new RequestCounts();
    const labels = { ...probe };
    counts.add(labels);
    labels.tenant = 'changed';
    expect(counts.all()[0]!.labels.tenant).toBe('acme');
  });
});
