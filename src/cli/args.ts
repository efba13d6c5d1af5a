/**
 * Command-line parsing helpers on top of node:util's parseArgs: typed numeric flags with errors
 * that name the flag and the value, and help text built from one option table.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { StudioError } from '../shared/errors';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** Shown in help: what the option sets, with its unit and default. */
  help: string;
  multiple?: boolean;
}

export type OptionTable = Record<string, OptionSpec>;

export function parseCommand(argv: string[], options: OptionTable, allowPositionals = true) {
  const config: ParseArgsConfig = {
    args: argv,
    options: Object.fromEntries(Object.entries(options).map(([name, spec]) => [name, { type: spec.type, ...(spec.short ? { short: spec.short } : {}), ...(spec.multiple ? { multiple: true } : {}) }])),
    allowPositionals,
    strict: true,
  };
  try {
    return parseArgs(config) as { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };
  } catch (error) {
    throw new StudioError('INVALID_ARGUMENT', (error as Error).message.replace(/\. To specify a positional.*$/s, '.'), 'Run the command with --help to see its options.');
  }
}

export function formatHelp(usage: string, summary: string, options: OptionTable): string {
  const rows = Object.entries(options).map(([name, spec]) => {
    const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.type === 'string' ? ' VALUE' : ''}`;
    return `  ${flag.padEnd(34)} ${spec.help}`;
  });
  return `Usage: ${usage}\n\n${summary}\n\nOptions:\n${rows.join('\n')}\n`;
}

/** Reads a number flag; undefined when absent. */
export function numberFlag(values: Record<string, unknown>, name: string, check: { integer?: boolean; min?: number; max?: number; exclusiveMin?: boolean } = {}): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const value = Number(raw);
  const problems: string[] = [];
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(value)) problems.push('a number');
  else {
    if (check.integer && !Number.isInteger(value)) problems.push('an integer');
    if (check.min !== undefined && (check.exclusiveMin ? value <= check.min : value < check.min)) problems.push(`${check.exclusiveMin ? 'greater than' : 'at least'} ${check.min}`);
    if (check.max !== undefined && value > check.max) problems.push(`at most ${check.max}`);
  }
  if (problems.length) {
    throw new StudioError('INVALID_ARGUMENT', `--${name} must be ${problems.join(' and ')}. Received: --${name} ${JSON.stringify(raw)}.`, 'Run the command with --help to see the option\'s range.');
  }
  return value;
}

export function stringFlag(values: Record<string, unknown>, name: string): string | undefined {
  const raw = values[name];
  return typeof raw === 'string' ? raw : undefined;
}

export function requireFlag(values: Record<string, unknown>, name: string, hint: string): string {
  const value = stringFlag(values, name);
  if (!value) throw new StudioError('INVALID_ARGUMENT', `--${name} is required.`, hint);
  return value;
}
