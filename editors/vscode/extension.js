// Starts `cnndsl lsp` for .cnn files (the command is the setting `cnndsl.server.command`).
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("cnndsl").get("server.command");
  client = new LanguageClient(
    "cnndsl",
    "cnndsl language server",
    { command, args, transport: TransportKind.stdio },
    { documentSelector: [{ language: "cnn" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
