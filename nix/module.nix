# NixOS module for op-dbus: services.op-dbus.
#
# Runs `op-dbus serve` as a long-running Type=notify daemon (drift reported
# or corrected, the HTTP API on a unix socket and optionally TCP, MCP,
# org.opdbus1 on D-Bus). `timer.enable` adds the older oneshot
# (`op-dbus verify` or `apply --yes`) on a systemd timer.
#
# Evaluated offline by internal/nixos/module_test.go with nixpkgs' lib and
# stub declarations of the NixOS options it sets (nix/eval-module.nix).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.op-dbus;
  inherit (lib) types;

  # The JSON value type (what pkgs.formats.json { } checks), from lib alone.
  jsonValue =
    let
      valueType =
        types.nullOr (
          types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf valueType)
            (types.listOf valueType)
          ]
        )
        // {
          description = "JSON value";
        };
    in
    valueType;

  validate = pkgs.callPackage ./validate-state.nix { };

  # The document the service reads, validated inside the build.
  stateFile = validate (
    if cfg.state != null then
      {
        inherit (cfg) package state;
      }
    else
      {
        inherit (cfg) package stateFile;
      }
  );

  # The stable path the daemon reads; a new generation changes what it
  # points to, and the daemon reloads (SIGHUP) instead of restarting.
  statePath = "/etc/op-dbus/state.json";

  # One argument as systemd reads it in Exec* lines: double-quoted, with
  # % (specifiers) and $ (variables) doubled. Like NixOS's
  # utils.escapeSystemdExecArg, without needing `utils`.
  escapeExecArg =
    arg:
    lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON (toString arg));
  escapeExecArgs = args: lib.concatMapStringsSep " " escapeExecArg args;

  exe = lib.getExe cfg.package;

  # A Go time.Duration as op-dbus's flags take it ("90s", "5m", "1h30m").
  isGoDuration = s: builtins.match "0|(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+" s != null;

  varLib = "/var/lib/";
  stateDirName =
    if lib.hasPrefix varLib cfg.stateDir then lib.removePrefix varLib cfg.stateDir else null;

  apiSocketDir = if cfg.apiSocket != null then dirOf cfg.apiSocket else null;
  runtimeDirName =
    if apiSocketDir != null && lib.hasPrefix "/run/" apiSocketDir then
      lib.removePrefix "/run/" apiSocketDir
    else
      null;

  # Plugins the state names (only known when `state` is a Nix attrset).
  plugins =
    if cfg.state != null && builtins.isAttrs cfg.state && cfg.state ? plugins then
      builtins.attrNames cfg.state.plugins
    else
      [ ];
  # The services those plugins talk to: start them first.
  pluginUnits =
    lib.optional (builtins.elem "ovs" plugins) "ovsdb.service"
    ++ lib.optional (builtins.elem "networkmanager" plugins) "NetworkManager.service";

  serveArgs =
    [
      exe
      "serve"
      "--state=${statePath}"
      "--mode=${cfg.mode}"
      "--state-dir=${cfg.stateDir}"
      "--dbus=${cfg.dbus}"
    ]
    ++ lib.optional (cfg.apiSocket != null) "--api-socket=${cfg.apiSocket}"
    ++ lib.optionals (cfg.apiListen != null) [
      "--api-listen=${cfg.apiListen}"
      "--api-token-file=${toString cfg.apiTokenFile}"
    ]
    ++ lib.optional cfg.mcp "--mcp"
    ++ lib.optional cfg.mcpAllowApply "--mcp-allow-apply"
    ++ lib.optional (cfg.confirmWithin != null) "--confirm-within=${cfg.confirmWithin}"
    ++ lib.optional (cfg.interval != null) "--interval=${cfg.interval}"
    ++ cfg.extraArgs;

  oneshotArgs =
    [
      exe
      "--state-dir=${cfg.stateDir}"
    ]
    ++ cfg.timer.extraArgs
    ++ (
      if cfg.mode == "enforce" then
        [
          "apply"
          "--yes"
        ]
      else
        [ "verify" ]
    )
    ++ [ statePath ];

  # Where the service may write: its state directory (StateDirectory= when
  # under /var/lib, else ReadWritePaths=) and the API socket's directory
  # (RuntimeDirectory= when under /run, else ReadWritePaths=).
  stateDirConfig =
    if stateDirName != null then
      {
        StateDirectory = stateDirName;
        StateDirectoryMode = "0700";
      }
    else
      { ReadWritePaths = [ cfg.stateDir ]; };

  # Sandboxing shared by the daemon and the oneshot: the same as
  # dist/op-dbus.service, where each line says why. Most changes go through
  # D-Bus services, which do the privileged work; netlink changes need
  # CAP_NET_ADMIN and ping probes CAP_NET_RAW.
  hardening = {
    UMask = "0077";
    CapabilityBoundingSet = [
      "CAP_NET_ADMIN"
      "CAP_NET_RAW"
    ];
    AmbientCapabilities = "";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    # hostname1 changes the hostname on op-dbus's behalf; the process
    # itself never needs to.
    ProtectHostname = true;
    # AF_INET/AF_INET6: ping probes, OVSDB over tcp:, the TCP API.
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_NETLINK"
      "AF_INET"
      "AF_INET6"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    SystemCallErrorNumber = "EPERM";
    MemoryMax = "256M";
    TasksMax = 256;
  };
in
{
  options.services.op-dbus = {
    enable = lib.mkEnableOption "op-dbus, a daemon that keeps the host matching a declarative state document";

    package = lib.mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix {
        buildGoModule = pkgs.buildGo126Module or pkgs.buildGoModule;
      };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The op-dbus package.";
    };

    state = lib.mkOption {
      type = types.nullOr jsonValue;
      default = null;
      example = lib.literalExpression ''
        {
          version = 1;
          plugins.systemd.units."nginx.service" = {
            active_state = "active";
            enabled = true;
          };
        }
      '';
      description = ''
        The desired state document as a Nix attribute set, turned into JSON
        with builtins.toJSON and validated with `op-dbus validate` at build
        time. `op-dbus nixos generate` writes one as op-dbus-state.nix.
        The daemon reads it from /etc/op-dbus/state.json.
      '';
    };

    stateFile = lib.mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "A state document file (JSON or YAML) instead of `state`; validated at build time too.";
    };

    mode = lib.mkOption {
      type = types.enum [
        "report"
        "enforce"
      ];
      default = "report";
      description = ''
        report: drift is logged, counted and audited; nothing is changed.
        enforce: drift is also corrected (journaled, verified, rolled back on failure).
      '';
    };

    stateDir = lib.mkOption {
      type = types.str;
      default = "/var/lib/op-dbus";
      description = ''
        op-dbus's own state: lock, journal, snapshots, audit log (--state-dir).
        Under /var/lib it is the unit's StateDirectory=; elsewhere it is
        created by tmpfiles (0700 root) and made writable with ReadWritePaths=.
      '';
    };

    apiSocket = lib.mkOption {
      type = types.nullOr types.str;
      default = "/run/op-dbus/api.sock";
      description = ''
        Serve the HTTP API on this unix socket (--api-socket); null turns it
        off. Under /run its directory is the unit's RuntimeDirectory=.
      '';
    };

    apiListen = lib.mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "127.0.0.1:7810";
      description = "Also serve the API on this TCP host:port (--api-listen); needs apiTokenFile.";
    };

    apiTokenFile = lib.mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/op-dbus-token";
      description = ''
        The bearer token file for the TCP API (--api-token-file), read at
        run time. A path as a string, outside the Nix store: a Nix path
        literal would copy the token into the world-readable store.
      '';
    };

    mcp = lib.mkOption {
      type = types.bool;
      default = false;
      description = "Also serve MCP at /mcp on the API's listeners, under the same token (--mcp).";
    };

    mcpAllowApply = lib.mkOption {
      type = types.bool;
      default = false;
      description = "Let MCP clients apply plans they made, always under the confirm timer (--mcp-allow-apply).";
    };

    confirmWithin = lib.mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "2m";
      description = ''
        Applies through the API, D-Bus and MCP wait this long for
        `op-dbus commit` before they are rolled back (--confirm-within, a Go
        duration). null: op-dbus's default.
      '';
    };

    dbus = lib.mkOption {
      type = types.str;
      default = "system";
      description = "The bus on which the daemon owns org.opdbus1 (--dbus): system, session, a D-Bus address, or none.";
    };

    interval = lib.mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "10m";
      description = ''
        The daemon's full reconcile, a backstop to change signals
        (--interval, a Go duration such as "5m" or "1h"; not a systemd time
        span). null: op-dbus's default (5m).
      '';
    };

    extraArgs = lib.mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--snapshot-keep=50"
        "--debounce=200ms"
      ];
      description = "Extra arguments for `op-dbus serve` (its own flags and the global ones).";
    };

    timer = {
      enable = lib.mkEnableOption ''
        a oneshot op-dbus-oneshot.service on a timer, as older versions of
        this module ran: `op-dbus verify` (mode report) or `op-dbus apply
        --yes` (mode enforce). It takes the same lock as the daemon'';

      interval = lib.mkOption {
        type = types.str;
        default = "15min";
        description = "How often the oneshot runs (a systemd time span).";
      };

      extraArgs = lib.mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra global arguments for the oneshot, such as --snapshot-keep=50.";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.state == null) != (cfg.stateFile == null);
        message = "services.op-dbus: set exactly one of state and stateFile.";
      }
      {
        assertion = cfg.apiListen == null || cfg.apiTokenFile != null;
        message = "services.op-dbus: apiListen needs apiTokenFile (the TCP API is served only behind a bearer token).";
      }
      {
        assertion = cfg.apiTokenFile == null || lib.hasPrefix "/" cfg.apiTokenFile;
        message = "services.op-dbus: apiTokenFile must be an absolute path.";
      }
      {
        assertion = !cfg.mcp || cfg.apiSocket != null || cfg.apiListen != null;
        message = "services.op-dbus: mcp is served on the API's listeners: set apiSocket or apiListen.";
      }
      {
        assertion = !cfg.mcpAllowApply || cfg.mcp;
        message = "services.op-dbus: mcpAllowApply needs mcp.";
      }
      {
        assertion = lib.hasPrefix "/" cfg.stateDir && stateDirName != "";
        message = "services.op-dbus: stateDir must be an absolute path below / (and not /var/lib itself).";
      }
      {
        assertion = cfg.apiSocket == null || lib.hasPrefix "/" cfg.apiSocket;
        message = "services.op-dbus: apiSocket must be an absolute path.";
      }
      {
        assertion = cfg.interval == null || isGoDuration cfg.interval;
        message = "services.op-dbus: interval must be a Go duration such as \"5m\" or \"1h30m\" (not a systemd time span).";
      }
      {
        assertion = cfg.confirmWithin == null || isGoDuration cfg.confirmWithin;
        message = "services.op-dbus: confirmWithin must be a Go duration such as \"2m\".";
      }
    ];

    environment.systemPackages = [ cfg.package ];

    # The bus policy for org.opdbus1, the daemon's own D-Bus service.
    services.dbus.packages = [ cfg.package ];

    environment.etc."op-dbus/state.json".source = stateFile;

    systemd.tmpfiles.rules = lib.optional (stateDirName == null) "d ${cfg.stateDir} 0700 root root -";

    systemd.services.op-dbus = {
      description = "op-dbus: report (or correct) drift from the declared host state";
      documentation = [ "https://github.com/op-dbus/op-dbus/blob/main/docs/daemon.md" ];
      after = [
        "dbus.service"
        "network.target"
      ]
      ++ pluginUnits;
      wants = [ "dbus.service" ] ++ pluginUnits;
      wantedBy = [ "multi-user.target" ];
      # A new state reloads the daemon (SIGHUP); new flags restart it.
      reloadTriggers = [ stateFile ];
      serviceConfig =
        {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = escapeExecArgs serveArgs;
          ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
          Restart = "on-failure";
          RestartSec = "5s";
          WatchdogSec = "60s";
          TimeoutStopSec = "30s";
        }
        // lib.optionalAttrs (runtimeDirName != null) {
          RuntimeDirectory = runtimeDirName;
          RuntimeDirectoryMode = "0755";
        }
        // hardening
        // stateDirConfig
        // {
          ReadWritePaths =
            (stateDirConfig.ReadWritePaths or [ ])
            ++ lib.optional (apiSocketDir != null && runtimeDirName == null) apiSocketDir;
        };
    };

    systemd.services.op-dbus-oneshot = lib.mkIf cfg.timer.enable {
      description = "op-dbus: ${if cfg.mode == "enforce" then "apply" else "verify"} the declared host state once";
      after = [
        "dbus.service"
        "network.target"
      ]
      ++ pluginUnits;
      wants = [ "dbus.service" ] ++ pluginUnits;
      restartTriggers = [ stateFile ];
      serviceConfig =
        {
          Type = "oneshot";
          ExecStart = escapeExecArgs oneshotArgs;
          # verify exits 2 on drift: reported in the journal, not a failure.
          SuccessExitStatus = lib.optional (cfg.mode == "report") 2;
        }
        // hardening
        // stateDirConfig;
    };

    systemd.timers.op-dbus-oneshot = lib.mkIf cfg.timer.enable {
      description = "Run op-dbus-oneshot every ${cfg.timer.interval}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "1min";
        OnUnitActiveSec = cfg.timer.interval;
      };
    };
  };
}
