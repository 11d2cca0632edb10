# NixOS module for op-dbus: services.op-dbus.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.op-dbus;
  json = pkgs.formats.json { };
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

  command =
    if cfg.mode == "enforce" then
      [
        "apply"
        "--yes"
      ]
    else
      [ "verify" ];
in
{
  options.services.op-dbus = {
    enable = lib.mkEnableOption "op-dbus, which keeps the host matching a declarative state document";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix {
        buildGoModule = pkgs.buildGo126Module or pkgs.buildGoModule;
      };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The op-dbus package.";
    };

    state = lib.mkOption {
      type = lib.types.nullOr json.type;
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
      '';
    };

    stateFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "A state document file (JSON or YAML) instead of `state`; validated at build time too.";
    };

    mode = lib.mkOption {
      type = lib.types.enum [
        "report"
        "enforce"
      ];
      default = "report";
      description = ''
        report: `op-dbus verify` logs drift and changes nothing.
        enforce: `op-dbus apply --yes` restores the state (verified, rolled back on failure).
      '';
    };

    interval = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = "15min";
      example = "1h";
      description = "How often to run (a systemd time span); null runs once at boot only.";
    };

    stateDir = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/op-dbus";
      description = "op-dbus's own state: lock, journal, snapshots, audit log.";
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Extra global arguments, such as --snapshot-keep=50.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.state == null) != (cfg.stateFile == null);
        message = "services.op-dbus: set exactly one of state and stateFile.";
      }
    ];

    environment.systemPackages = [ cfg.package ];

    # The bus policy for org.opdbus1, the daemon's own D-Bus service.
    services.dbus.packages = [ cfg.package ];

    environment.etc."op-dbus/state.json".source = stateFile;

    systemd.services.op-dbus = {
      description = "op-dbus: keep the host matching its state document";
      after = [
        "dbus.service"
        "network.target"
      ];
      wants = [ "dbus.service" ];
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ stateFile ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = lib.escapeShellArgs (
          [
            (lib.getExe cfg.package)
            "--state-dir=${cfg.stateDir}"
          ]
          ++ cfg.extraArgs
          ++ command
          ++ [ "${stateFile}" ]
        );
        # verify exits 2 on drift: reported in the journal, not a failure.
        SuccessExitStatus = lib.optional (cfg.mode == "report") 2;
        StateDirectory = "op-dbus";
        StateDirectoryMode = "0700";
        UMask = "0077";
        # op-dbus works through D-Bus services (systemd1, hostname1, ...),
        # which do the privileged work; it needs no capability itself.
        CapabilityBoundingSet = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ReadWritePaths = [ cfg.stateDir ];
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = false; # hostname1 changes the hostname on its behalf
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_NETLINK"
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
      };
    };

    systemd.timers.op-dbus = lib.mkIf (cfg.interval != null) {
      description = "Run op-dbus every ${cfg.interval}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "1min";
        OnUnitActiveSec = cfg.interval;
      };
    };
  };
}
