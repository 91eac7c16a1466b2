# The Node demo backends, one image each from this one Dockerfile (build arg SERVICE):
#   web_static   the page that shows which replica served it (auto-reload, login/logout buttons,
#                "Fetch web_dynamic"), Express 5;
#   web_dynamic  the JSON API answering with its hostname, a per-instance uuid and a joke (WebSocket
#                echo too), Express 5;
#   spring_app   a Spring-Boot-like service in Node (banner, startup log, /app/index.html,
#                /app/helloParams, Actuator-style /app/health, Tomcat access log and keep-alive timeout).
#
# Build context: sandbox-images/ (the servers import ../shared/), e.g.
#   docker build -f node.Dockerfile --build-arg SERVICE=web_dynamic -t balancer-lab/web_dynamic sandbox-images
# NODE_BASE: an image with Node >= 18 (default the official node image), or a plain Debian such as the
# offline balancer-lab/base:bookworm, on which Debian's nodejs is installed.
# npm dependencies: the lab's builder puts a node_modules prepared on the host into deps/ (the
# containers here cannot reach the npm registry); without it, npm ci runs in the build.
# Runs `node <SERVICE>/server.js` as PORT=8080 on 0.0.0.0; faults arrive in LAB_FAULT_FILE
# (sandbox-images/shared/faults.js).
ARG NODE_BASE=node:20-bookworm-slim
FROM ${NODE_BASE}
ARG SERVICE
RUN case "${SERVICE}" in web_static|web_dynamic|spring_app) ;; *) echo "node.Dockerfile: set --build-arg SERVICE to web_static, web_dynamic or spring_app (got '${SERVICE}')" >&2; exit 1;; esac
RUN command -v node >/dev/null || (apt-get update && apt-get install -y --no-install-recommends nodejs && rm -rf /var/lib/apt/lists/*)
WORKDIR /srv/sandbox
# deps* matches nothing without the lab's builder; package.json keeps the COPY valid then.
COPY package.json package-lock.json deps* ./
# No deps/ (a plain `docker build`, or a compose build): npm installs the dependencies (npm from
# Debian on a base without it).
RUN [ -d node_modules ] || { command -v npm >/dev/null || (apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*); \
      npm ci --omit=dev --no-audit --no-fund; }
COPY shared/ ./shared/
COPY ${SERVICE}/ ./${SERVICE}/
RUN (id lab >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin lab) \
 && mkdir -p /run/lab && chown lab /run/lab
USER lab
ENV NODE_ENV=production PORT=8080 HOST=0.0.0.0 LAB_FAULT_FILE=/run/lab/fault.json LAB_SERVICE=${SERVICE}
EXPOSE 8080
# The offline base has no curl: node itself asks GET /health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "require('http').get({host:'127.0.0.1',port:process.env.PORT||8080,path:'/health',timeout:2500},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1)).on('timeout',()=>process.exit(1))"]
STOPSIGNAL SIGTERM
# exec: node is PID 1 and gets the SIGTERM itself, as with the exec form.
CMD ["sh", "-c", "exec node \"${LAB_SERVICE}/server.js\""]
