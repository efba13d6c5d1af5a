/** The application menu: standard roles plus navigation to the app's pages. */
import { Menu, type BrowserWindow, type MenuItemConstructorOptions } from 'electron';

export function installMenu(getWindow: () => BrowserWindow | undefined): void {
  const go = (hash: string) => () => {
    const window = getWindow();
    if (window) void window.webContents.executeJavaScript(`location.hash = ${JSON.stringify(hash)}`);
  };
  const template: MenuItemConstructorOptions[] = [
    ...(process.platform === 'darwin' ? [{ role: 'appMenu' as const }] : []),
    {
      label: 'File',
      submenu: [
        { label: 'New Run', accelerator: 'CmdOrCtrl+N', click: go('#/new/model') },
        { type: 'separator' },
        process.platform === 'darwin' ? { role: 'close' } : { role: 'quit' },
      ],
    },
    { role: 'editMenu' },
    {
      label: 'View',
      submenu: [
        { label: 'History', accelerator: 'CmdOrCtrl+H', click: go('#/runs') },
        { label: 'System', click: go('#/system') },
        { type: 'separator' },
        { role: 'reload' },
        { role: 'toggleDevTools' },
        { type: 'separator' },
        { role: 'resetZoom' },
        { role: 'zoomIn' },
        { role: 'zoomOut' },
        { role: 'togglefullscreen' },
      ],
    },
    { role: 'windowMenu' },
  ];
  Menu.setApplicationMenu(Menu.buildFromTemplate(template));
}
