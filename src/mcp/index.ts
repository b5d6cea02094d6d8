/** The public surface of src/mcp: `toolgate mcp`, the MCP enforcement proxy (docs/mcp.md). */
export { compileMcpConfig, loadMcpConfig, type McpProxyConfig, type Overrides } from "./config";
export { McpProxy, META, NEEDS_APPROVAL_NOTE } from "./proxy";
export { startMcpProxy, type RunningProxy, type StartOptions } from "./serve";
