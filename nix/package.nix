# op-dbus built from this repository.
{
  lib,
  buildGoModule,
  version ? "dev",
}:

buildGoModule {
  pname = "op-dbus";
  inherit version;

  src = lib.cleanSource ../.;

  # Hash of `go mod vendor`; update it when go.mod or go.sum change
  # (build once with lib.fakeHash and copy the hash Nix reports).
  vendorHash = "sha256-GFAa2d8w4QxZlE3tw/ukAWTG+bf8IiDo/YIDk456U6E=";

  subPackages = [ "cmd/op-dbus" ];

  ldflags = [
    "-s"
    "-w"
    "-X github.com/op-dbus/op-dbus/internal/cli.Version=${version}"
  ];

  # The tests need root and the test bed's daemons.
  doCheck = false;

  meta = {
    description = "Treat a Linux host as one declarative state document";
    homepage = "https://github.com/op-dbus/op-dbus";
    mainProgram = "op-dbus";
    platforms = lib.platforms.linux;
  };
}
