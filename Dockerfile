# Images of fieldsync's two programs, each a statically linked Go binary
# (CGO_ENABLED=0) in an empty image: nothing is pulled, no shell, no libc.
# `make images` builds the binaries into bin/linux and both targets:
#   docker build -f Dockerfile --target broker -t fieldsync/broker:dev bin/linux
#   docker build -f Dockerfile --target agent  -t fieldsync/agent:dev  bin/linux
# Health checks run the binaries' own `healthcheck` subcommand.

FROM scratch AS broker
COPY broker-embed /broker-embed
EXPOSE 4222 6222 8222
ENTRYPOINT ["/broker-embed"]
CMD ["run", "--config", "/config/broker.yaml"]

FROM scratch AS agent
COPY device-agent /device-agent
ENTRYPOINT ["/device-agent"]
CMD ["run", "--config", "/config/agent.yaml"]
