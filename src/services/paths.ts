/**
 * Where LoRA Studio keeps its data outside Electron (CLI, web bridge): `LORA_STUDIO_HOME`, else
 * `$XDG_DATA_HOME/lora-studio`, else `~/.local/share/lora-studio` (on macOS `~/Library/Application
 * Support/lora-studio`, on Windows `%APPDATA%/lora-studio`). The desktop app uses Electron's
 * userData folder instead.
 */
import os from 'node:os';
import path from 'node:path';

export function defaultAppDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LORA_STUDIO_HOME) return path.resolve(env.LORA_STUDIO_HOME);
  if (process.platform === 'darwin') return path.join(os.homedir(), 'Library', 'Application Support', 'lora-studio');
  if (process.platform === 'win32') return path.join(env.APPDATA ?? path.join(os.homedir(), 'AppData', 'Roaming'), 'lora-studio');
  return path.join(env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share'), 'lora-studio');
}
