/** Display formatting of the renderer: counts, bytes, durations, learning rates and dates. */
import { describe, expect, test } from 'vitest';
import {
  formatAxisNumber,
  formatBytes,
  formatCount,
  formatDate,
  formatDuration,
  formatInteger,
  formatLearningRate,
  formatLoss,
  formatPercent,
  formatRelativeDate,
} from '../../src/renderer/src/format';

describe('formatCount', () => {
  test.each([
    [0, '0'],
    [950, '950'],
    [999, '999'],
    [1000, '1K'],
    [2048, '2K'],
    [4096, '4.1K'],
    [134_217, '134K'],
    [141_056, '141K'],
    [999_950, '1M'],
    [1_234_567, '1.2M'],
    [124_439_808, '124M'],
    [1_100_048_384, '1.1B'],
    [-2500, '-2.5K'],
  ])('count %d shows as %s', (count, text) => {
    expect(formatCount(count)).toBe(text);
  });

  test('missing count shows a dash', () => {
    expect(formatCount(undefined)).toBe('—');
    expect(formatCount(Number.NaN)).toBe('—');
  });
});

describe('formatBytes', () => {
  test.each([
    [0, '0 B'],
    [648, '648 B'],
    [8704, '8.5 KB'],
    [572_416, '559 KB'],
    [1_048_064, '1.0 MB'],
    [13 * 1024 * 1024, '13 MB'],
    [1.5 * 1024 ** 3, '1.5 GB'],
  ])('%d bytes show as %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  test('negative or missing bytes show a dash', () => {
    expect(formatBytes(-1)).toBe('—');
    expect(formatBytes(undefined)).toBe('—');
  });
});

describe('formatDuration', () => {
  test.each([
    [0, '0s'],
    [300, '<1s'],
    [1400, '1s'],
    [45_000, '45s'],
    [65_000, '1m 05s'],
    [600_000, '10m 00s'],
    [3_599_400, '59m 59s'],
    [3_600_000, '1h 00m'],
    [7_380_000, '2h 03m'],
  ])('%d ms shows as %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  test('negative duration shows a dash', () => {
    expect(formatDuration(-5)).toBe('—');
  });
});

describe('formatLearningRate', () => {
  test.each([
    [0.0002, '2e-4'],
    [2e-4, '2e-4'],
    [0.00015, '1.5e-4'],
    [1 / 30_000, '3.33e-5'],
    [0.001, '1e-3'],
    [1, '1e0'],
    [0, '0'],
  ])('%s shows as %s', (value, text) => {
    expect(formatLearningRate(value)).toBe(text);
  });
});

describe('formatInteger and formatLoss', () => {
  test('tokens per second round to whole numbers', () => {
    expect(formatInteger(512.7)).toBe('513');
    expect(formatInteger(12_345.2)).toBe('12,345');
  });

  test('axis ticks drop trailing zeros', () => {
    expect(formatAxisNumber(6.2)).toBe('6.2');
    expect(formatAxisNumber(6.150351)).toBe('6.1504');
    expect(formatAxisNumber(300)).toBe('300');
    expect(formatAxisNumber(Number.NaN)).toBe('—');
  });

  test('loss keeps four decimals', () => {
    expect(formatLoss(6.136021614)).toBe('6.1360');
    expect(formatLoss(undefined)).toBe('—');
  });
});

describe('formatPercent', () => {
  test.each([
    [0, '0%'],
    [0.02904, '2.9%'],
    [0.014733, '1.5%'],
    [0.0035, '0.35%'],
    [0.00012, '0.012%'],
    [1, '100%'],
  ])('fraction %s shows as %s', (fraction, text) => {
    expect(formatPercent(fraction)).toBe(text);
  });
});

describe('formatRelativeDate', () => {
  const now = new Date('2026-03-10T12:00:00Z');
  test.each([
    ['2026-03-10T11:59:30Z', 'just now'],
    ['2026-03-10T11:55:00Z', '5 minutes ago'],
    ['2026-03-10T09:00:00Z', '3 hours ago'],
    ['2026-03-09T11:00:00Z', 'yesterday'],
    ['2026-03-06T12:00:00Z', '4 days ago'],
    ['2026-02-17T12:00:00Z', '3 weeks ago'],
    ['2025-03-10T12:00:00Z', 'last year'],
  ])('%s shows as %s', (iso, text) => {
    expect(formatRelativeDate(iso, now)).toBe(text);
  });

  test('invalid date is shown unchanged', () => {
    expect(formatRelativeDate('not a date', now)).toBe('not a date');
    expect(formatDate('not a date')).toBe('not a date');
  });

  test('absolute date names year and time', () => {
    expect(formatDate('2026-03-10T12:00:00Z')).toMatch(/^Mar 1[01], 2026, \d{1,2}:\d{2}\s?[AP]M$/);
  });
});
