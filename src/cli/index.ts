/**
 * `lora-studio`: the command-line interface. Each command prints a one-line cause and exits
 * non-zero on failure; `--help` on any command lists its options.
 */
import { formatError, toErrorPayload } from '../shared/errors';
import { evalCommand, generateCommand } from './tools';
import { backendCommand, datasetsCommand, exportCommand, runsCommand } from './manage';
import { demoCommand, trainCommand } from './train';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; summary: string }> = {
  train: { run: trainCommand, summary: 'fine-tune a LoRA adapter: train --model DIR --data FILE [options]' },
  demo: { run: demoCommand, summary: 'fine-tune the built-in demo model on the built-in dataset' },
  eval: { run: evalCommand, summary: 'mean loss and perplexity: eval --model DIR [--adapter DIR] --data FILE' },
  generate: { run: generateCommand, summary: 'generate text: generate --model DIR [--adapter DIR] --prompt TEXT' },
  datasets: { run: datasetsCommand, summary: 'datasets import FILE | datasets list' },
  runs: { run: runsCommand, summary: 'runs list | runs show RUN [--json] | runs resume RUN | runs delete RUN --yes' },
  export: { run: exportCommand, summary: 'export RUN --format peft|merged|gguf --out DIR' },
  backend: { run: backendCommand, summary: 'show the compute backend and why faster ones are unavailable' },
};

function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, command]) => `  ${name.padEnd(10)} ${command.summary}`);
  return `Usage: lora-studio COMMAND [options]\n\nCommands:\n${rows.join('\n')}\n\nRun lora-studio COMMAND --help for a command's options.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`Unknown command "${name}".\n\n${usage()}`);
    return 2;
  }
  return command.run(rest);
}

// A closed pipe (`lora-studio runs list | head`) is not an error of the command.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    const payload = toErrorPayload(error);
    process.stderr.write(`lora-studio: ${formatError(payload)}\n`);
    if (payload.code === 'INTERNAL' && process.env.LORA_STUDIO_DEBUG) process.stderr.write(`${(error as Error).stack}\n`);
    process.exitCode = payload.code === 'INVALID_ARGUMENT' ? 2 : 1;
  },
);
