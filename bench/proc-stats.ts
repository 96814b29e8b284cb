/**
 * Another process's memory and CPU as Linux reports them in /proc: what the
 * durability bench reads of the gateway child. Linux only.
 */
import { readFileSync, writeFileSync } from 'node:fs';

// USER_HZ: the unit of utime/stime in /proc/<pid>/stat, 100 on every Linux build that matters.
const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcMemory {
  /** VmRSS: resident now, bytes. */
  rss: number;
  /** VmHWM: the highest resident size since start or the last {@link resetPeakRss}, bytes. */
  hwm: number;
}

/** VmRSS and VmHWM of `pid`; undefined once the process is gone. */
export function procMemory(pid: number): ProcMemory | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/**
 * Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`, Linux
 * 4.0+), so each scenario's peak is its own. False when the kernel refuses.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU seconds `pid` has used so far (its threads included). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces and parentheses: the fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return Number.NaN;
  }
}

/** Polls VmRSS of `pid` (and this process's RSS) every `intervalMs` until stopped. */
export function sampleRss(pid: number, intervalMs: number): { stop(): { peak: number; samples: number; ownPeak: number } } {
  let peak = 0;
  let ownPeak = 0;
  let samples = 0;
  const poll = () => {
    const memory = procMemory(pid);
    if (memory) {
      peak = Math.max(peak, memory.rss);
      samples++;
    }
    ownPeak = Math.max(ownPeak, process.memoryUsage.rss());
  };
  poll();
  const timer = setInterval(poll, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      poll();
      return { peak, samples, ownPeak };
    },
  };
}
