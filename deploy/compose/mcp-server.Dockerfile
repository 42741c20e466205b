# The example MCP server of docker-compose.yaml: the Model Context Protocol
# project's reference "everything" server (tools, prompts, resources,
# sampling, elicitation), speaking streamable HTTP on :8080 at /mcp.
# https://github.com/modelcontextprotocol/servers/tree/main/src/everything
FROM node:24-alpine
RUN npm install --global --omit=dev @modelcontextprotocol/server-everything@2026.8.31
USER node
ENV PORT=8080
EXPOSE 8080
CMD ["mcp-server-everything", "streamableHttp"]
