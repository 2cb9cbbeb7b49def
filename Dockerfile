# syntax=docker/dockerfile:1
# Multi-stage build: a static walhook binary on a minimal image, run as a
# non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/walhook ./cmd/walhook \
 && mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/walhook /usr/local/bin/walhook
# The embedded state file lives here; mount a volume to keep it.
COPY --from=build --chown=65532:65532 /out/state /var/lib/walhook
USER 65532:65532
WORKDIR /var/lib/walhook
ENV WALHOOK_CONFIG=/etc/walhook/walhook.yaml
EXPOSE 9400
# The image has no shell, curl or wget: `walhook healthcheck` (a hidden,
# internal command) asks /healthz through server.listen and server.token of
# the same configuration, and exits 1 when it gets no 200. It needs the
# admin server on (server.listen not ""). /healthz says the process is
# alive; readiness (/readyz) is for load balancers, since a standby is
# healthy but not ready.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/walhook", "healthcheck"]
# SIGTERM drains in-flight deliveries for up to --shutdown-timeout (30 s):
# give the container longer than that to stop (docker run --stop-timeout 40,
# compose stop_grace_period: 40s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/walhook"]
CMD ["run"]
