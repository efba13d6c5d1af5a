/** Display formatting shared by the views and the charts. Missing or non-finite values show as "—". */
import { toErrorPayload, type ErrorPayload } from '../../shared/errors';

export const MISSING = '—';

const isNumber = (value: number | null | undefined): value is number => typeof value === 'number' && Number.isFinite(value);

/** Drops the zeros after a decimal point: "2.50" → "2.5", "3.0" → "3". */
function trimZeros(text: string): string {
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}

/** Byte sizes in binary multiples (1 KB = 1024 B): 559 KB, 1.4 GB. */
export function formatBytes(bytes: number | null | undefined): string {
  if (!isNumber(bytes) || bytes < 0) return MISSING;
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  // Rounding 1023.6 KB up to 1024 KB would print a number that belongs to the next unit.
  if (unit < units.length - 1 && Math.round(value) >= 1024) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 && unit > 0 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** Parameter and row counts: 950, 4.1K, 134K, 1.2M, 124M, 1.1B. */
export function formatCount(count: number | null | undefined): string {
  if (!isNumber(count)) return MISSING;
  const sign = count < 0 ? '-' : '';
  let value = Math.abs(count);
  if (value < 1000) return `${sign}${Math.round(value)}`;
  const suffixes = ['K', 'M', 'B', 'T'];
  let index = -1;
  while (value >= 1000 && index < suffixes.length - 1) {
    value /= 1000;
    index += 1;
  }
  // 999,950 would round to "1000K"; move it to the next suffix instead.
  if (value >= 999.5 && index < suffixes.length - 1) {
    value /= 1000;
    index += 1;
  }
  const text = value < 10 ? trimZeros(value.toFixed(1)) : String(Math.round(value));
  return `${sign}${text}${suffixes[index]}`;
}

/** A whole number with thousands separators: 1,234. */
export function formatInteger(value: number | null | undefined): string {
  return isNumber(value) ? Math.round(value).toLocaleString('en-US') : MISSING;
}

/** A fraction as a percentage: 0.02904 → "2.9%", 0.00012 → "0.012%". */
export function formatPercent(fraction: number | null | undefined): string {
  if (!isNumber(fraction)) return MISSING;
  const percent = fraction * 100;
  if (percent === 0) return '0%';
  const text = Math.abs(percent) >= 1 ? percent.toFixed(1) : percent.toPrecision(2);
  return `${trimZeros(text)}%`;
}

/** Durations: "<1s", "45s", "1m 05s", "2h 03m". */
export function formatDuration(ms: number | null | undefined): string {
  if (!isNumber(ms) || ms < 0) return MISSING;
  if (ms > 0 && ms < 500) return '<1s';
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  const pad = (value: number) => String(value).padStart(2, '0');
  if (minutes < 60) return `${minutes}m ${pad(seconds % 60)}s`;
  const hours = Math.floor(minutes / 60);
  return `${hours}h ${pad(minutes % 60)}m`;
}

/** Loss values with four decimals, the precision at which runs differ. */
export function formatLoss(value: number | null | undefined): string {
  return isNumber(value) ? value.toFixed(4) : MISSING;
}

/** Axis ticks: at most four decimals and no trailing zeros, 6.15, 0.1234, 12. */
export function formatAxisNumber(value: number): string {
  return Number.isFinite(value) ? String(Number(value.toFixed(4))) : MISSING;
}

/** Learning rates in the notation of training configs: 2e-4, 1.5e-5, 0. */
export function formatLearningRate(value: number | null | undefined): string {
  if (!isNumber(value)) return MISSING;
  if (value === 0) return '0';
  const [mantissa, exponent] = value.toExponential(2).split('e');
  return `${trimZeros(mantissa)}e${Number(exponent)}`;
}

/** Absolute date and time, "Dec 4, 2026, 8:17 PM", in the user's time zone. */
export function formatDate(iso: string | null | undefined): string {
  if (!iso) return MISSING;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString('en-US', { dateStyle: 'medium', timeStyle: 'short' });
}

const RELATIVE_STEPS: { unit: Intl.RelativeTimeFormatUnit; seconds: number }[] = [
  { unit: 'year', seconds: 365 * 86_400 },
  { unit: 'month', seconds: 30 * 86_400 },
  { unit: 'week', seconds: 7 * 86_400 },
  { unit: 'day', seconds: 86_400 },
  { unit: 'hour', seconds: 3600 },
  { unit: 'minute', seconds: 60 },
];

/** Time relative to `now`: "just now", "5 minutes ago", "yesterday", "3 weeks ago". */
export function formatRelativeDate(iso: string | null | undefined, now: Date = new Date()): string {
  if (!iso) return MISSING;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const seconds = (date.getTime() - now.getTime()) / 1000;
  if (Math.abs(seconds) < 45) return 'just now';
  const format = new Intl.RelativeTimeFormat('en-US', { numeric: 'auto' });
  for (const step of RELATIVE_STEPS) {
    if (Math.abs(seconds) >= step.seconds) return format.format(Math.round(seconds / step.seconds), step.unit);
  }
  return format.format(Math.round(seconds / 60), 'minute');
}

/** Any thrown value as `{ code, message, hint }` for ErrorBanner. */
export function asError(error: unknown): ErrorPayload {
  return toErrorPayload(error);
}
