# The lab server as a container, for `docker compose up` (docker-compose.yml). It runs the lessons'
# web app and the lab's own proxy (embedded, or HAProxy installed here), and drives the demo backends
# as sibling containers through the mounted Docker socket (LAB_RUNTIME=docker).
#
# Build args: NODE_BASE (default the official node:20 image). Its npm install needs the npm registry.
ARG NODE_BASE=node:20-bookworm-slim
FROM ${NODE_BASE}
# HAProxy so the lab can switch to it inside this container; nodejs only when the base lacks it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy ca-certificates $(command -v node >/dev/null || echo nodejs npm) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /lab
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build
ENV LAB_RUNTIME=docker LAB_HOST=0.0.0.0 LAB_STATE_DIR=/lab/.lab
EXPOSE 4000 8080
# A GET of the lessons page; the lab answers 200 once it has started (its token is not needed for /).
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["node", "-e", "fetch('http://127.0.0.1:4000/').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "--import", "tsx", "server/main.ts"]
