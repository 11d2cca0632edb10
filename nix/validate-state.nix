# A state document checked by `op-dbus validate` at build time: the result
# is the document itself, and an invalid one fails the build (and so
# nixos-rebuild) with every problem named.
{ runCommand }:
{
  package,
  name ? "op-dbus-state.json",
  state ? null,
  stateFile ? null,
}:

assert (state == null) != (stateFile == null);

runCommand name
  (
    {
      nativeBuildInputs = [ package ];
      preferLocalBuild = true;
    }
    // (
      if state != null then
        {
          json = builtins.toJSON state;
          passAsFile = [ "json" ];
        }
      else
        { src = stateFile; }
    )
  )
  ''
    if [ -n "''${jsonPath-}" ]; then
      cp "$jsonPath" state.json
    else
      cp "$src" state.json
    fi
    op-dbus --state-dir "$TMPDIR/op-dbus" validate state.json
    cp state.json "$out"
  ''
