-- Neovim's built-in LSP client against `cnndsl lsp`, headless (run by benchmarks/neovim_lsp.py):
--   nvim --headless --clean -u NONE -l? ... : see the Python driver for the command line.
-- Opens the file named in $CNN_FILE, waits for the server's diagnostics, hovers at $CNN_HOVER ("line:col",
-- 0-based), fixes the mistake in the buffer (`strid=` -> `stride=`), waits for the diagnostics to clear, hovers
-- again; prints what came as JSON lines and quits with status 0 when everything came, 1 otherwise.
local file = os.getenv("CNN_FILE")
local hover_at = os.getenv("CNN_HOVER")
local server = os.getenv("CNN_SERVER") or "cnndsl"
vim.cmd("edit " .. vim.fn.fnameescape(file))
local buf = vim.api.nvim_get_current_buf()
local client_id = vim.lsp.start_client({
  name = "cnndsl",
  cmd = { server, "lsp" },
  root_dir = vim.fn.fnamemodify(file, ":h"),
})
vim.lsp.buf_attach_client(buf, client_id)
local ok = vim.wait(60000, function() return #vim.diagnostic.get(buf) > 0 end, 50)
local out = {}
for _, d in ipairs(vim.diagnostic.get(buf)) do
  table.insert(out, vim.fn.json_encode({ kind = "diagnostic", line = d.lnum, col = d.col, code = d.code,
                                         message = d.message }))
end
local line, col = hover_at:match("(%d+):(%d+)")
local function hover(tag)
  local params = { textDocument = { uri = vim.uri_from_bufnr(buf) },
                   position = { line = tonumber(line), character = tonumber(col) } }
  local replies = vim.lsp.buf_request_sync(buf, "textDocument/hover", params, 60000) or {}
  for _, reply in pairs(replies) do
    if reply.result and reply.result.contents then
      table.insert(out, vim.fn.json_encode({ kind = "hover", when = tag, value = reply.result.contents.value }))
      return true
    end
  end
  return false
end
local hovered = hover("with the mistake")
-- fix the mistake as a user would, in the buffer: the server checks again and the diagnostic goes
local row = vim.api.nvim_buf_get_lines(buf, tonumber(line), tonumber(line) + 1, false)[1]
vim.api.nvim_buf_set_lines(buf, tonumber(line), tonumber(line) + 1, false, { (row:gsub("strid=", "stride=")) })
local cleared = vim.wait(60000, function() return #vim.diagnostic.get(buf) == 0 end, 50)
table.insert(out, vim.fn.json_encode({ kind = "cleared", value = cleared }))
hovered = hover("fixed") and hovered
io.stdout:write(table.concat(out, "\n") .. "\n")
vim.lsp.stop_client(client_id)
vim.wait(2000, function() return vim.tbl_isempty(vim.lsp.get_active_clients()) end, 50)
vim.cmd((ok and hovered and cleared) and "qall!" or "cquit! 1")
