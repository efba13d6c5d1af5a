/** Ids of store rows: a kind prefix, the UTC creation time, and random hex digits against collisions. */
import { randomBytes } from 'node:crypto';

/** Formats a date as `YYYYMMDD-HHMMSS` in UTC. */
function formatCompactUtc(date: Date): string {
  const iso = date.toISOString(); // 2025-01-31T12:34:56.789Z
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}-${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}`;
}

/** Creates an id such as `run-20250131-123456-9f3a`, which sorts by creation time. */
export function createTimedId(prefix: string, date: Date = new Date()): string {
  return `${prefix}-${formatCompactUtc(date)}-${randomBytes(2).toString('hex')}`;
}

export function createRunId(date?: Date): string {
  return createTimedId('run', date);
}

/** Dataset ids name the folder `<appDataDir>/datasets/<id>/`, so the importer may create one before inserting. */
export function createDatasetId(date?: Date): string {
  return createTimedId('ds', date);
}

export function createModelId(): string {
  return `model-${randomBytes(4).toString('hex')}`;
}
