{
  description = "op-dbus: treat a Linux host as one declarative state document";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      package =
        pkgs:
        pkgs.callPackage ./nix/package.nix {
          buildGoModule = pkgs.buildGo126Module or pkgs.buildGoModule;
          version = self.shortRev or "dirty";
        };
    in
    {
      packages = forAllSystems (pkgs: {
        default = package pkgs;
        op-dbus = package pkgs;
      });

      nixosModules.default =
        { pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.op-dbus.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      checks = forAllSystems (
        pkgs:
        let
          validate = pkgs.callPackage ./nix/validate-state.nix { };
          op-dbus = package pkgs;
        in
        {
          package = op-dbus;
          # A valid state passes `op-dbus validate` inside the build ...
          state-valid = validate {
            package = op-dbus;
            state = {
              version = 1;
              plugins = {
                hostname.static_hostname = "web1";
                systemd.units."nginx.service" = {
                  active_state = "active";
                  enabled = true;
                };
              };
            };
          };
          # ... and an invalid one fails the build.
          state-invalid-fails = pkgs.testers.testBuildFailure (validate {
            package = op-dbus;
            state = {
              version = 1;
              plugins.systemd.units."nginx.service".enabeld = true;
            };
          });
          module-evaluates =
            (lib.nixosSystem {
              inherit (pkgs.stdenv.hostPlatform) system;
              modules = [
                self.nixosModules.default
                {
                  boot.loader.grub.enable = false;
                  fileSystems."/".device = "none";
                  system.stateVersion = "25.05";
                  services.op-dbus = {
                    enable = true;
                    mode = "enforce";
                    state.version = 1;
                  };
                }
              ];
            }).config.systemd.units."op-dbus.service".unit;
        }
      );
    };
}
