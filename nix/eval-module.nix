# Evaluates nix/module.nix without NixOS or nixpkgs: nixpkgs' lib/ alone,
# stub declarations of the NixOS options the module sets, and a stub pkgs
# whose callPackage gives fake derivations (the build-time validation of
# the state is not run here; on NixOS it is).
#
#   nix-instantiate --eval --strict --json nix/eval-module.nix \
#     --argstr nixpkgsLib /path/to/nixpkgs/lib \
#     --arg config '{ services.op-dbus = { enable = true; state.version = 1; }; }' \
#     -A service
#
# Attributes: service (systemd.services.op-dbus), oneshot and timer (null
# when the timer is off), etc, tmpfiles, dbusPackages, failedAssertions
# (the messages of assertions that do not hold), and config itself.
{
  nixpkgsLib,
  config ? { },
}:

let
  lib = import nixpkgsLib;
  inherit (lib) types mkOption;

  fakeDrv = name: extra: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    outputs = [ "out" ];
  } // extra;

  pkgs = {
    coreutils = fakeDrv "coreutils" { };
    callPackage =
      path: _args:
      if baseNameOf path == "validate-state.nix" then
        # The validated document's store path, without building it.
        _doc: fakeDrv "op-dbus-state.json" { }
      else
        fakeDrv "op-dbus" { meta.mainProgram = "op-dbus"; };
  };

  anything = mkOption {
    type = types.anything;
    default = null;
  };
  listOfAnything = mkOption {
    type = types.listOf types.anything;
    default = [ ];
  };

  # Roughly NixOS's systemd unit options: lists concatenate across
  # definitions, *Config attrsets merge, anything else is free-form.
  unitType = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = {
      after = listOfAnything;
      before = listOfAnything;
      wants = listOfAnything;
      requires = listOfAnything;
      wantedBy = listOfAnything;
      documentation = listOfAnything;
      restartTriggers = listOfAnything;
      reloadTriggers = listOfAnything;
      unitConfig = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      timerConfig = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
    };
  };

  stubs = {
    options = {
      assertions = listOfAnything;
      warnings = listOfAnything;
      environment.systemPackages = listOfAnything;
      environment.etc = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      services.dbus.packages = listOfAnything;
      systemd.tmpfiles.rules = listOfAnything;
      systemd.services = mkOption {
        type = types.attrsOf unitType;
        default = { };
      };
      systemd.timers = mkOption {
        type = types.attrsOf unitType;
        default = { };
      };
    };
  };

  eval = lib.evalModules {
    modules = [
      stubs
      ./module.nix
      config
    ];
    specialArgs = { inherit pkgs; };
  };
  c = eval.config;
in
{
  config = c.services.op-dbus;
  service = c.systemd.services.op-dbus or null;
  oneshot = c.systemd.services.op-dbus-oneshot or null;
  timer = c.systemd.timers.op-dbus-oneshot or null;
  etc = c.environment.etc;
  tmpfiles = c.systemd.tmpfiles.rules;
  dbusPackages = c.services.dbus.packages;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
}
