// Unit square with a circular inclusion of another wave speed (P1 triangles).
// Regenerate: gmsh -2 -format msh41 inclusion.geo  (scripts/make-meshes does all meshes)
SetFactory("OpenCASCADE");
h = 0.02;
Rectangle(1) = {0, 0, 0, 1, 1};
Disk(2) = {0.6, 0.55, 0, 0.18};
BooleanFragments{ Surface{1}; Delete; }{ Surface{2}; Delete; }
// After fragmenting: surface 2 is the disk, surface 3 the square minus the disk.
Physical Surface("inclusion", 1) = {2};
Physical Surface("matrix", 2) = {3};
outer() = Boundary{ Surface{3}; };
Physical Curve("outer", 11) = {outer(0), outer(1), outer(2), outer(3)};
Mesh.CharacteristicLengthMax = h;
Mesh.CharacteristicLengthMin = h / 2;
